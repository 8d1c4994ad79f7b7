"""What a checkpoint's plain data may be: key types and sizes, keys sharing a hash, nesting depth.

Python's containers trust their keys: a dict whose keys all hash alike takes quadratic time
(integers that are multiples of 2**61 - 1 all hash to 0), hashing a tuple recurses in C with no
depth limit (a tuple nested 150,000 deep crashes the process), and a big int or tuple is hashed
again every time it is used as a key. ``ContainerBuilder`` fills the dicts and sets of one load so
that none of that can happen: every key is checked to be cheap to hash and compare before it is
hashed, strings and bytes are interned so equal keys compare by identity, and a dict or set may
hold only ``MAX_SAME_HASH`` keys with one hash value. Nesting is limited over the finished object
(``_tensors.check_plain``), since a list can be filled after it was put inside another.
"""
from ..errors import CheckpointError

MAX_NESTING = 256         # containers inside containers; a training checkpoint nests a handful of levels
MAX_KEY_ITEMS = 64        # values inside one tuple or frozenset key, nested ones included
MAX_KEY_INT_BITS = 64     # an int key is hashed again at every use, in time linear in its size
MAX_SAME_HASH = 8         # keys of one dict or set sharing a hash value (-1 and -2 already do)

KEY_RULE = (f"dict keys and set items must be strings, bytes, numbers (ints of at most {MAX_KEY_INT_BITS} "
            f"bits), None, or tuples and frozensets of at most {MAX_KEY_ITEMS} of them")
_CONSTANT_COST_KEYS = (bool, float, complex, type(None))


class ContainerBuilder:
    """Fills the dicts and sets of one load in time linear in what the file spells out."""

    def __init__(self, where):
        self.where = where
        self._interned = {}
        self._hash_counts = {}  # id(container) -> (container, {hash value: keys with it})

    def intern(self, value):
        """The one object of this load equal to ``value`` (a str or bytes), so equal keys are identical."""
        # str and bytes hash with a per-process random key: nobody can plan collisions among them
        return self._interned.setdefault(value, value)

    def set_items(self, target, pairs):
        """``target[key] = value`` for each (key, value) of ``pairs``; ``target`` is a dict or OrderedDict."""
        counts = None
        for key, value in pairs:
            if not isinstance(key, (str, bytes)):  # interned, and their hashes cannot be planned
                self.check_key(key, f"{type(target).__name__} key")
                counts = self._counts_of(target) if counts is None else counts
                self._count(counts, key, type(target).__name__)
            target[key] = value

    def add_items(self, target, items):
        """``target.add(item)`` for each item of ``items``; ``target`` is a set."""
        self._add(target, items, "set", None)

    def frozenset_of(self, items):
        """A frozenset of ``items``, built under the same rules as a set."""
        building = set()
        self._add(building, items, "frozenset", {})
        return frozenset(building)

    def _add(self, target, items, kind, counts):
        for item in items:
            if not isinstance(item, (str, bytes)):
                self.check_key(item, f"{kind} item")
                counts = self._counts_of(target) if counts is None else counts
                self._count(counts, item, kind)
            target.add(item)

    def check_key(self, key, what):
        """Refuse a key (``what``: "dict key", "set item", ...) whose hash or equality could cost more than
        a bounded amount, before anything hashes it."""
        budget, pending = MAX_KEY_ITEMS, [key]
        while pending:
            value = pending.pop()
            kind = type(value)
            if kind is tuple or kind is frozenset:
                budget -= len(value)
                if budget < 0:
                    raise CheckpointError(f"{_a(what)} in {self.where} is a {kind.__name__} holding more than "
                                          f"{MAX_KEY_ITEMS} values (nested ones included); {KEY_RULE}")
                pending.extend(value)
            elif kind is int:
                if value.bit_length() > MAX_KEY_INT_BITS:
                    raise CheckpointError(f"{_a(what)} in {self.where} is an int of {value.bit_length()} bits; "
                                          f"{KEY_RULE}")
            elif not (kind in _CONSTANT_COST_KEYS or isinstance(value, (str, bytes))):
                raise CheckpointError(f"{_a(what)} in {self.where} is or holds a {kind.__name__}; {KEY_RULE}")

    def _counts_of(self, target):
        entry = self._hash_counts.get(id(target))
        if entry is None or entry[0] is not target:
            entry = self._hash_counts[id(target)] = (target, {})  # holding target keeps its id unique
        return entry[1]

    def _count(self, counts, key, kind):
        value = hash(key)  # bounded cost: check_key has run
        count = counts.get(value, 0) + 1
        if count > MAX_SAME_HASH:
            raise CheckpointError(f"{_a(kind)} in {self.where} has more than {MAX_SAME_HASH} keys with the same "
                                  f"hash value ({value}); a checkpoint's keys do not collide like that, and "
                                  f"building such {_a(kind)} takes quadratic time")
        counts[value] = count


def _a(noun):
    return ("an " if noun[0] in "aeiouAEIOU" else "a ") + noun
