"""What the package's callbacks keep on the model they train.

One `ModelState` per model, set as the attribute `_lrphase_state` by the
first package callback that sees the model. It is three things:

* the resume state of every package callback, saved inside every weight
  checkpoint of the model (`BackupAndRestore`, `ModelCheckpoint`,
  `model.save_weights`, `model.save`) in the same file as the weights, so
  a checkpoint and the controllers' state can never disagree;
* the metric providers the callbacks share (one Hessian eigenvalue
  estimate per epoch, whoever asks for it);
* the decision events of the last epochs (`StageCheckpoint` reads them).
"""

from keras_lrphase.backend.keras_compat import CheckpointStateStore

ATTRIBUTE = "_lrphase_state"
EVENTS = "__events__"


class ModelState(CheckpointStateStore):
    """The package's per-model registry (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.providers = {}
        self.events = {}
        self.owners = {}
        self.sealed = False

    def register(self, name, owner, get_state):
        """Registers `owner`'s checkpoint state under a unique name.

        Called from `set_model`, which Keras runs for every callback of a
        `fit` before any `on_train_begin`. The first registration after a
        `seal()` starts a new `fit`: the previous participants are dropped.
        Two callbacks of the same kind in one `fit` get `name`, `name_1`,
        ... in callback-list order, so a resumed program with the same list
        finds its own state.

        Returns:
            The name the state is saved under.
        """
        if self.sealed:
            self.entries, self.owners, self.sealed = {}, {}, False
        for key, other in self.owners.items():
            if other is owner:
                self.entries[key] = get_state
                return key
        key, index = name, 0
        while key in self.entries:
            index += 1
            key = f"{name}_{index}"
        self.entries[key] = get_state
        self.owners[key] = owner
        return key

    def save_own_variables(self, store):
        self.entries[EVENTS] = lambda: {str(k): v for k, v in self.events.items()}
        try:
            super().save_own_variables(store)
        finally:
            del self.entries[EVENTS]

    def load_own_variables(self, store):
        super().load_own_variables(store)
        events = self.loaded.pop(EVENTS, None)
        if events is not None:
            self.events = {
                int(k): [tuple(pair) for pair in v] for k, v in events.items()
            }

    def seal(self):
        """Marks the participants of the current `fit` as complete."""
        self.sealed = True

    def shared_provider(self, provider):
        """The registered provider equal to `provider` (or `provider`)."""
        return self.providers.setdefault(provider.key, provider)

    def publish(self, epoch, source, events):
        """Records `source`'s decision `events` at the end of `epoch`."""
        if events:
            self.events.setdefault(epoch, []).extend(
                (source, event) for event in events
            )
            for old in [e for e in self.events if e < epoch - 2]:
                del self.events[old]

    def events_at(self, epoch):
        """The `(source, event)` pairs published at the end of `epoch`."""
        return list(self.events.get(epoch, ()))


def model_state(model):
    """The model's `ModelState`, attached on first use."""
    state = getattr(model, ATTRIBUTE, None)
    if not isinstance(state, ModelState):
        state = ModelState()
        setattr(model, ATTRIBUTE, state)
    return state
