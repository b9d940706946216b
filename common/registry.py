"""Registries: interpreters, metrics and models are found by name, so a YAML
file can say ``interpreter: piq`` or ``metrics: [fid_in, ...]``."""


class Registry:
    """A name -> class (or factory) map filled by the ``register`` decorator."""

    def __init__(self, kind):
        self.kind = kind
        self._items = {}

    def register(self, name):
        def add(obj):
            if name in self._items and self._items[name] is not obj:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            obj.registry_name = name
            return obj

        return add

    def get(self, name):
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"Unknown {self.kind} {name!r}; known: {sorted(self._items)}") from None

    def build(self, name, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self):
        return sorted(self._items)

    def __contains__(self, name):
        return name in self._items


INTERPRETERS = Registry("interpreter")
METRICS = Registry("metric")
