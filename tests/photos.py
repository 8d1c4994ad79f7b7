"""A tiny real-photo ImageFolder for training tests: crops of scikit-image's bundled sample photos (a test dependency).

Each class is one photo (``skimage.data``: chelsea the cat, coffee, rocket, astronaut); its images are
random crops with flips and brightness changes, so train and val hold different views of the same scene.
"""
import numpy as np

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def make_photo_folder(root, classes=PHOTOS[:3], train_per_class=24, val_per_class=6, size=64, seed=0):
    """Write ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``; returns ``root``."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        photo = getattr(skimage.data, name)()
        height, width = photo.shape[:2]
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                side = int(min(height, width) * rng.uniform(0.45, 0.9))
                top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
                crop = photo[top:top + side, left:left + side].astype(np.float32)
                crop = np.clip(crop * rng.uniform(0.75, 1.25) + rng.normal(0, 6, crop.shape), 0, 255)
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                image = Image.fromarray(crop.astype(np.uint8)).resize((size, size), Image.BILINEAR)
                image.save(folder / f"{name}_{i:02d}.png")
    return root
