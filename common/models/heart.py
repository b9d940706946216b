"""Heart-sound window classifiers: a spectrogram CNN, and the same CNN given the heart-cycle segmentation.

Dissanayake et al. (2020) compare classifiers that see the segmentation (S1,
systole, S2, diastole) with ones that do not. ``StateConditionedEncoder``
is the "given" variant: each frame's state enters as four indicator channels
beside the spectrogram (an unknown state is all zeros), so the network can
read "this frame is systole" without finding it in the sound. The states are
an input of the clip, not of X: they are set for the duration of a call with
``given_states`` (a context manager, so no state outlives it), and every
interpreter, which perturbs X only, explains the sound given the segmentation.
``states_on_frames`` puts per-sample states on the front end's frames.
"""

import contextlib

import torch
from torch import nn

from common.errors import ToolkitError

N_STATES = 4  # S1, systole, S2, diastole (common.data.physionet2016.STATES)


def states_on_frames(states, hop, n_frames):
    """(B, samples) per-sample state codes -> (B, n_frames): the state at each frame's centre (t * hop)."""
    index = (torch.arange(n_frames, device=states.device) * int(hop)).clamp(max=states.shape[-1] - 1)
    return states[..., index]


class StateConditionedEncoder(nn.Module):
    """``encoder`` (a ``LogMelCNN`` built with ``in_channels = 1 + n_states``) over the spectrogram and one
    indicator channel per state, the states given with ``given_states``.

    Arguments
    ---------
    encoder : LogMelCNN
        Its ``features`` (an ``nn.Sequential`` over (B, C, T, F)) is applied to the stacked channels.
    n_states : int
        State codes 1..n_states become channels; 0 (unknown) is none of them.
    """

    def __init__(self, encoder, n_states=N_STATES):
        super().__init__()
        first = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
        if first.in_channels != 1 + n_states:
            raise ToolkitError(
                f"the encoder's first convolution takes {first.in_channels} channels; the segmentation-given "
                f"encoder needs 1 + {n_states} (the spectrogram and one per state): set in_channels: {1 + n_states}"
            )
        self.encoder = encoder
        self.n_states = int(n_states)
        self._states = None

    @contextlib.contextmanager
    def given_states(self, states):
        """Within the block, X's frames have the states ``states`` (B or 1, T) (codes 0..n_states)."""
        previous, self._states = self._states, states
        try:
            yield self
        finally:
            self._states = previous

    def forward(self, X):
        states = self._states
        if states is None:
            raise ToolkitError(
                "this classifier is given the heart-cycle segmentation: call it inside "
                "`with encoder.given_states(states):` (states (B, T) on its frames; common.models.heart)"
            )
        if states.shape[-1] != X.shape[1] or states.shape[0] not in (1, X.shape[0]):
            raise ToolkitError(f"states of shape {tuple(states.shape)} do not fit X of shape {tuple(X.shape)}")
        onehot = nn.functional.one_hot(states.long().clamp(0, self.n_states), self.n_states + 1)[..., 1:]
        channels = onehot.to(X.dtype).permute(0, 2, 1).unsqueeze(-1)  # (B', n_states, T, 1)
        channels = channels.expand(X.shape[0], -1, -1, X.shape[2])
        return self.encoder.features(torch.cat([X.unsqueeze(1), channels], dim=1))


def given_states(model, states):
    """``model.embedding_model.given_states(states)`` when the model is segmentation-given, else a no-op."""
    encoder = getattr(model, "embedding_model", None)
    if isinstance(encoder, StateConditionedEncoder):
        return encoder.given_states(states)
    return contextlib.nullcontext()
