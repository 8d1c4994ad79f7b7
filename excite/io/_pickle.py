"""A restricted pickle interpreter: builds plain containers and allow-listed objects, never imports or calls anything else.

Python's own ``pickle.Unpickler`` is not used on purpose: its REDUCE/BUILD/NEWOBJ/OBJ call whatever
object reaches the stack, and its C memo grows to the largest index a file names (a 4-byte
LONG_BINPUT can ask for gigabytes). Here every opcode is interpreted by this file:

* GLOBAL / STACK_GLOBAL resolve only through the ``allowed_globals`` table the caller passes;
  anything else raises UnsafeCheckpointError naming the module and attribute.
* REDUCE calls only ``SafeCallable`` objects (excite's own rebuild functions) from that table.
* BUILD only sets an ``OrderedDict``'s ``_metadata`` (torch's state dict version table) to a dict.
* Dicts and sets are filled through ``_limits.ContainerBuilder``, which refuses keys that could
  make hashing recurse, take quadratic time or cost more than a bounded amount per use.
* A length field is checked against the bytes left before anything is allocated for it.
* INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4 and out-of-band buffers are refused outright.
* Before anything is built, ``prescan`` walks the whole opcode stream once, simulating the stack
  just enough to know the operands of STACK_GLOBAL (even when they come back from the memo), so a
  forbidden global anywhere in the file is refused before any rebuild function runs.
"""
import _compat_pickle
import collections
import io
import pickletools

from ..errors import CheckpointError, UnsafeCheckpointError
from ._files import stream_size
from ._limits import ContainerBuilder

MAX_PICKLE_BYTES = 128 << 20  # a state_dict's pickle is ~150 bytes per tensor; this is plenty
_MAX_PROTOCOL = 5


class SafeCallable:
    """An allow-listed global that REDUCE may call: one of excite's own rebuild functions."""

    __slots__ = ("qualname", "function")

    def __init__(self, qualname, function):
        self.qualname = qualname
        self.function = function

    def __repr__(self):
        return f"<allow-listed {self.qualname}>"


_REFUSED_OPCODES = {
    "INST": "INST instantiates an arbitrary class",
    "OBJ": "OBJ instantiates an arbitrary class",
    "NEWOBJ": "NEWOBJ calls cls.__new__ of an arbitrary class",
    "NEWOBJ_EX": "NEWOBJ_EX calls cls.__new__ of an arbitrary class",
    "EXT1": "EXT1 imports through the copyreg extension registry",
    "EXT2": "EXT2 imports through the copyreg extension registry",
    "EXT4": "EXT4 imports through the copyreg extension registry",
    "NEXT_BUFFER": "out-of-band buffers are not part of a checkpoint",
    "READONLY_BUFFER": "out-of-band buffers are not part of a checkpoint",
}
_STRING_OPCODES = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
                   "STRING", "BINSTRING", "SHORT_BINSTRING"}
_PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPCODES = {"GET", "BINGET", "LONG_BINGET"}


def describe(value, limit=80):
    """A short, safe description of a value for error messages (never a huge repr)."""
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "...'"
    if isinstance(value, SafeCallable):
        return value.qualname
    return type(value).__name__


def _global_name(module, name):
    return f"{module}.{name}"


def _python3_name(module, name):
    """What unpickling would really import: protocol <= 2 files use Python 2 names (commands.Popen)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return _global_name(_compat_pickle.IMPORT_MAPPING.get(module, module), name)


def _refuse_global(module, name, how):
    python3 = _python3_name(module, name)
    alias = f", which is {python3}" if python3 != _global_name(module, name) else ""
    raise UnsafeCheckpointError(
        f"refused to load global {_global_name(module, name)}{alias} (reached through {how}): a checkpoint "
        f"may only contain tensors, storages, ordered dicts and plain Python containers, numbers "
        f"and strings")


class _BoundedStream:
    """What pickletools reads through: a length field longer than the bytes left is refused before
    anything is allocated for it (a file's reader would try to allocate what the field says)."""

    def __init__(self, stream, where):
        self.stream, self.where = stream, where
        self.end = stream.tell() + stream_size(stream)
        self.tell = stream.tell
        self.large_read = None  # (position, byte count) of the last read that could run out of memory

    def read(self, count):
        if count > 1 << 16:
            position = self.stream.tell()
            if count > self.end - position:
                raise CheckpointError(f"malformed pickle in {self.where}: a length field ending at byte "
                                      f"{position} claims {count} bytes, but only {self.end - position} remain")
            self.large_read = (position, count)
        return self.stream.read(count)

    def readline(self):
        # text opcodes end at a newline; a line longer than a whole pickle may be is not one
        return self.stream.readline(MAX_PICKLE_BYTES)


def _out_of_memory(source):
    large_read = getattr(source, "large_read", None)
    if large_read is None:
        return f"ran out of memory before byte {source.tell()}"
    position, count = large_read
    return f"ran out of memory for the {count} bytes that the length field ending at byte {position} claims"


def _ops(stream, where):
    """pickletools.genops with its errors turned into CheckpointError."""
    # reading past the end of a BytesIO allocates nothing, and pickletools then names the claim
    source = stream if type(stream) is io.BytesIO else _BoundedStream(stream, where)
    ops = pickletools.genops(source)
    while True:
        try:
            op = next(ops)
        except StopIteration:
            return
        except MemoryError:
            raise CheckpointError(f"cannot read the pickle in {where}: {_out_of_memory(source)}") from None
        except (ValueError, EOFError, UnicodeDecodeError, OverflowError) as e:
            raise CheckpointError(f"malformed pickle in {where}: {e}") from None
        yield op


def _split_global(arg, where, pos):
    module, sep, name = arg.partition(" ")
    if not sep or not module or not name:
        raise CheckpointError(f"malformed GLOBAL {describe(arg)} at byte {pos} of {where}")
    return module, name


class _Mark:
    __slots__ = ()

    def __repr__(self):
        return "MARK"


_MARK = _Mark()
_UNKNOWN = object()


def prescan(stream, allowed_globals, where):
    """Refuse forbidden opcodes and globals anywhere in one pickle, before anything is built.

    Simulates only the stack shape (from pickletools' opcode metadata), the string constants and
    the memo, which is enough to know every global a STACK_GLOBAL would resolve.
    """
    stack, memo = [], {}

    def pop(pos):
        if not stack:
            raise CheckpointError(f"malformed pickle in {where}: stack underflow at byte {pos}")
        return stack.pop()

    def pop_to_mark(pos):
        while True:
            if pop(pos) is _MARK:
                return

    for opcode, arg, pos in _ops(stream, where):
        name = opcode.name
        if name in _REFUSED_OPCODES:
            target = ""
            if name == "INST":
                target = " " + _global_name(*_split_global(arg, where, pos))
            raise UnsafeCheckpointError(
                f"refused opcode {name}{target} at byte {pos} of {where}: {_REFUSED_OPCODES[name]}")
        if name == "PROTO" and not 0 <= arg <= _MAX_PROTOCOL:
            raise CheckpointError(f"unsupported pickle protocol {arg} in {where}")
        if name == "GLOBAL":
            module, attr = _split_global(arg, where, pos)
            if (module, attr) not in allowed_globals:
                _refuse_global(module, attr, "GLOBAL")
            stack.append(_UNKNOWN)
        elif name == "STACK_GLOBAL":
            attr, module = pop(pos), pop(pos)
            if not isinstance(module, str) or not isinstance(attr, str):
                raise UnsafeCheckpointError(
                    f"refused STACK_GLOBAL at byte {pos} of {where}: its module and name are not "
                    f"string constants")
            if (module, attr) not in allowed_globals:
                _refuse_global(module, attr, "STACK_GLOBAL")
            stack.append(_UNKNOWN)
        elif name in _STRING_OPCODES:
            stack.append(arg)
        elif name in _PUT_OPCODES or name == "MEMOIZE":
            if not stack or stack[-1] is _MARK:
                raise CheckpointError(f"malformed pickle in {where}: memo store of nothing at byte {pos}")
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in _GET_OPCODES:
            if arg not in memo:
                raise CheckpointError(f"malformed pickle in {where}: memo key {arg} is read before it is written")
            stack.append(memo[arg])
        elif name == "DUP":
            value = pop(pos)
            stack += [value, value]
        elif name == "POP":
            pop(pos)  # a MARK on top is popped too, as pickle does
        else:
            before = opcode.stack_before
            if pickletools.markobject in before:
                pop_to_mark(pos)
                for _ in range(before.index(pickletools.markobject)):
                    pop(pos)
            else:
                for _ in before:
                    pop(pos)
            stack += [_MARK if item is pickletools.markobject else _UNKNOWN for item in opcode.stack_after]
        if name == "STOP":
            return


class RestrictedUnpickler:
    """Interpret one pickle with the allow-list; ``persistent_load`` resolves storage ids.

    ``allowed_globals`` maps (module, name) to the object GLOBAL pushes: a SafeCallable, which
    REDUCE may call, or a plain constant (a storage type, a dtype), which nothing may call.
    ``builder`` fills dicts and sets (shared by the pickles of one file, so they share its interned
    strings).
    """

    def __init__(self, stream, allowed_globals, persistent_load, where, builder=None):
        self.stream = stream
        self.allowed_globals = allowed_globals
        self.persistent_load = persistent_load
        self.where = where
        self.builder = builder or ContainerBuilder(where)

    def load(self):
        start = self.stream.tell()
        prescan(self.stream, self.allowed_globals, self.where)
        self.stream.seek(start)
        self.stack, self.metastack, self.memo = [], [], {}
        for opcode, arg, pos in _ops(self.stream, self.where):
            self.pos = pos
            handler = getattr(self, "op_" + opcode.name, None)
            if handler is None:
                raise UnsafeCheckpointError(f"refused opcode {opcode.name} at byte {pos} of {self.where}")
            result = handler(arg) if opcode.arg is not None else handler()
            if opcode.name == "STOP":
                return result
        raise CheckpointError(f"truncated pickle in {self.where}: no STOP opcode")

    # ----- helpers ----------------------------------------------------------------------
    def fail(self, what):
        raise CheckpointError(f"malformed pickle in {self.where} at byte {self.pos}: {what}")

    def pop(self):
        if not self.stack:
            self.fail("stack underflow")
        return self.stack.pop()

    def top(self):
        if not self.stack:
            self.fail("stack underflow")
        return self.stack[-1]

    def pop_mark(self):
        if not self.metastack:
            self.fail("no MARK to pop to")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def push(self, value):
        self.stack.append(value)

    def resolve_global(self, module, name, how):
        if type(module) is not str or type(name) is not str:
            raise UnsafeCheckpointError(f"refused {how} at byte {self.pos} of {self.where}: "
                                        f"module and name must be strings")
        if (module, name) not in self.allowed_globals:
            _refuse_global(module, name, how)
        self.push(self.allowed_globals[(module, name)])

    # ----- opcodes: framing and constants -----------------------------------------------
    def op_PROTO(self, arg):
        if not 0 <= arg <= _MAX_PROTOCOL:
            self.fail(f"unsupported protocol {arg}")

    def op_FRAME(self, arg):
        pass

    def op_STOP(self):
        value = self.pop()
        if self.stack or self.metastack:
            self.fail("values left on the stack at STOP")
        return value

    def _push_arg(self, arg):
        self.push(arg)

    def _push_interned(self, arg):
        self.push(self.builder.intern(arg))

    op_INT = op_BININT = op_BININT1 = op_BININT2 = op_LONG = op_LONG1 = op_LONG4 = _push_arg
    op_FLOAT = op_BINFLOAT = _push_arg
    op_UNICODE = op_SHORT_BINUNICODE = op_BINUNICODE = op_BINUNICODE8 = _push_interned
    op_STRING = op_BINSTRING = op_SHORT_BINSTRING = _push_interned
    op_BINBYTES = op_SHORT_BINBYTES = op_BINBYTES8 = _push_interned

    def op_BYTEARRAY8(self, arg):
        self.push(bytearray(arg))

    def op_NONE(self):
        self.push(None)

    def op_NEWTRUE(self):
        self.push(True)

    def op_NEWFALSE(self):
        self.push(False)

    # ----- containers ---------------------------------------------------------------------
    def op_MARK(self):
        self.metastack.append(self.stack)
        self.stack = []

    def op_POP(self):
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_POP_MARK(self):
        self.pop_mark()

    def op_DUP(self):
        self.push(self.top())

    def op_EMPTY_TUPLE(self):
        self.push(())

    def op_TUPLE(self):
        self.push(tuple(self.pop_mark()))

    def op_TUPLE1(self):
        self.push((self.pop(),))

    def op_TUPLE2(self):
        b, a = self.pop(), self.pop()
        self.push((a, b))

    def op_TUPLE3(self):
        c, b, a = self.pop(), self.pop(), self.pop()
        self.push((a, b, c))

    def op_EMPTY_LIST(self):
        self.push([])

    def op_LIST(self):
        self.push(self.pop_mark())

    def _target_list(self):
        target = self.top()
        if type(target) is not list:
            raise UnsafeCheckpointError(f"refused APPEND to a {describe(target)} in {self.where}: only lists")
        return target

    def op_APPEND(self):
        value = self.pop()
        self._target_list().append(value)

    def op_APPENDS(self):
        items = self.pop_mark()
        self._target_list().extend(items)

    def op_EMPTY_DICT(self):
        self.push({})

    def _set_items(self, target, items):
        if type(target) not in (dict, collections.OrderedDict):
            raise UnsafeCheckpointError(f"refused SETITEM on a {describe(target)} in {self.where}: only dicts")
        if len(items) % 2:
            self.fail("odd number of items for a dict")
        self.builder.set_items(target, zip(items[::2], items[1::2]))

    def op_DICT(self):
        target = {}
        self._set_items(target, self.pop_mark())
        self.push(target)

    def op_SETITEM(self):
        value, key = self.pop(), self.pop()
        self._set_items(self.top(), [key, value])

    def op_SETITEMS(self):
        items = self.pop_mark()
        self._set_items(self.top(), items)

    def op_EMPTY_SET(self):
        self.push(set())

    def op_ADDITEMS(self):
        items = self.pop_mark()
        target = self.top()
        if type(target) is not set:
            raise UnsafeCheckpointError(f"refused ADDITEMS on a {describe(target)} in {self.where}: only sets")
        self.builder.add_items(target, items)

    def op_FROZENSET(self):
        self.push(self.builder.frozenset_of(self.pop_mark()))

    # ----- memo ---------------------------------------------------------------------------
    def _memo_put(self, key):
        self.memo[key] = self.top()

    op_PUT = op_BINPUT = op_LONG_BINPUT = _memo_put

    def op_MEMOIZE(self):
        self.memo[len(self.memo)] = self.top()

    def _memo_get(self, key):
        if key not in self.memo:
            self.fail(f"memo key {key} read before it is written")
        self.push(self.memo[key])

    op_GET = op_BINGET = op_LONG_BINGET = _memo_get

    # ----- the only opcodes that reach outside plain data -----------------------------------
    def op_GLOBAL(self, arg):
        module, name = _split_global(arg, self.where, self.pos)
        self.resolve_global(module, name, "GLOBAL")

    def op_STACK_GLOBAL(self):
        name, module = self.pop(), self.pop()
        self.resolve_global(module, name, "STACK_GLOBAL")

    def op_REDUCE(self):
        args, func = self.pop(), self.pop()
        if type(func) is not SafeCallable:
            raise UnsafeCheckpointError(
                f"refused REDUCE at byte {self.pos} of {self.where}: {describe(func)} is not an "
                f"allow-listed rebuild function")
        if type(args) is not tuple:
            self.fail(f"{func.qualname} called with {describe(args)} instead of an argument tuple")
        try:
            result = func.function(*args)
        except TypeError as e:  # wrong number of arguments; the rebuild functions check types themselves
            self.fail(f"{func.qualname}: {e}")
        self.push(self.builder.intern(result) if type(result) in (str, bytes) else result)

    def op_BUILD(self):
        state, target = self.pop(), self.top()
        if type(target) is not collections.OrderedDict:
            raise UnsafeCheckpointError(
                f"refused BUILD on a {describe(target)} at byte {self.pos} of {self.where}: only "
                f"an OrderedDict's attributes (such as _metadata) may be set")
        if type(state) is not dict:
            self.fail(f"BUILD state for an OrderedDict must be a dict of attributes, got {describe(state)}")
        for name, value in state.items():
            if name != "_metadata":
                raise UnsafeCheckpointError(
                    f"refused BUILD setting attribute {describe(name)} of an OrderedDict at byte {self.pos} of "
                    f"{self.where}: only a state dict's _metadata may be set")
            if type(value) not in (dict, collections.OrderedDict):
                self.fail(f"a state dict's _metadata must be a dict, got {describe(value)}")
        # a plain instance attribute, stored directly: no __setattr__ or __setstate__ runs
        vars(target).update(state)

    def _persistent(self, pid):
        if self.persistent_load is None:
            raise UnsafeCheckpointError(f"refused persistent id {describe(pid)} in {self.where}: "
                                        f"this pickle may not reference storages")
        self.push(self.persistent_load(pid))

    def op_PERSID(self, arg):
        self._persistent(arg)

    def op_BINPERSID(self):
        self._persistent(self.pop())
