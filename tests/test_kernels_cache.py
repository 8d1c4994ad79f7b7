"""The on-disk cache of compiled kernels (issue 15): $EXCITE_HOME/kernels/<key>, never site-packages,
keyed so another CPU, version, build or edited kernel source never loads a stale one.

Budget: a few seconds (one subprocess compiles one small kernel into an empty cache).
"""
import os
import shutil
import site
import subprocess
import sys

from excite.kernels import cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(home, **extra):
    env = dict(os.environ, EXCITE_HOME=str(home), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_CACHE_DIR", None)
    return dict(env, **extra)


def test_root_follows_excite_home_and_the_default_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EXCITE_HOME", str(tmp_path / "home"))
    assert cache.root() == str(tmp_path / "home" / "kernels")
    assert cache.directory() == os.path.join(str(tmp_path / "home" / "kernels"), cache.key())
    monkeypatch.delenv("EXCITE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.root() == str(tmp_path / "xdg" / "excite" / "kernels")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.root() == os.path.expanduser(os.path.join("~", ".cache", "excite", "kernels"))


def test_the_hub_and_the_kernels_share_one_home(monkeypatch, tmp_path):
    from excite.io import hub

    monkeypatch.setenv("EXCITE_HOME", str(tmp_path))
    assert os.path.dirname(cache.root()) == hub.get_dir() == str(tmp_path)


def test_key_changes_with_every_part():
    parts = cache.key_parts()
    assert parts["numba"] and parts["llvmlite"] and parts["cpu"] and parts["excite"]
    base = cache.key(parts)
    for name, other in (("excite", "9.9.9"), ("numba", "0.1.0"), ("llvmlite", "0.1.0"), ("python", "39"),
                        ("cpu", "another-cpu"), ("features", "00000000"), ("sources", "0" * 12),
                        ("build", "boundscheck")):
        assert cache.key(dict(parts, **{name: other})) != base, name
    assert cache.key() == cache.key(parts)  # the memoised key is the same computation


def test_sources_hash_changes_when_any_kernel_file_changes(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(cache.KERNELS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert cache.sources_hash(str(copy)) == cache.sources_hash()
    helper_file = copy / "compiled" / "simd.py"  # not the file a kernel is defined in: numba would miss it
    helper_file.write_text(helper_file.read_text() + "\n# edited\n")
    assert cache.sources_hash(str(copy)) != cache.sources_hash()


def test_compiled_kernels_land_in_excite_home_never_next_to_the_sources(tmp_path):
    code = ("import numpy as np\n"
            "from excite.kernels import activation, cache\n"
            "activation.forward(np.ones(1 << 16, np.float32), 'relu')\n"
            "from excite.kernels.compiled import elementwise\n"
            "print(elementwise.activation_forward._parallel._cache._cache_path)\n")
    before = _cache_files_beside_sources()
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path, EXCITE_KERNEL_PREFETCH="0"),
                         capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    path = out.stdout.split()[-1]
    assert path.startswith(str(tmp_path / "kernels") + os.sep)
    assert any(name.endswith(".nbi") for name in os.listdir(path))
    assert _cache_files_beside_sources() == before
    for packages in site.getsitepackages() + [site.getusersitepackages()]:
        assert not path.startswith(packages)
    listing = subprocess.run([sys.executable, "-m", "excite", "info", "--cache"], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert str(tmp_path / "kernels") in listing.stdout and "(current): 1 kernels" in listing.stdout
    cleared = subprocess.run([sys.executable, "-m", "excite", "info", "--clear-cache"], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=60)
    assert cleared.returncode == 0 and not os.path.exists(tmp_path / "kernels"), cleared.stderr


def _cache_files_beside_sources():
    found = set()
    for folder, _, files in os.walk(cache.KERNELS_DIR):
        found.update(os.path.join(folder, f) for f in files if f.endswith((".nbi", ".nbc")))
    return found
