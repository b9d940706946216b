"""Random placement of a short recording inside its zero-padded clip (Becker et al. 2018's AudioMNIST
preprocessing embeds each digit at a random offset in 1 s of zeros; the loader pads at the end)."""

import torch


class RandomPlacement(torch.nn.Module):
    """A waveform augmentation (``augmentation`` in the hparams: ``(wavs, lens) -> (wavs, lens)``): each clip's
    content (up to its last non-zero sample) is moved to a uniformly drawn offset in the zeros that follow it."""

    def __init__(self, generator=None):
        super().__init__()
        self.generator = generator

    def forward(self, wavs, lens):
        n = wavs.shape[-1]
        nonzero = wavs != 0
        last = torch.where(
            nonzero.any(-1), n - 1 - nonzero.flip(-1).int().argmax(-1), torch.zeros_like(wavs[:, 0], dtype=torch.long)
        )
        room = (n - 1 - last).clamp(min=0)
        offsets = (
            (torch.rand(len(wavs), generator=self.generator, device=wavs.device) * (room + 1)).long().clamp(max=room)
        )
        index = (torch.arange(n, device=wavs.device)[None, :] - offsets[:, None]) % n  # a roll per clip
        return wavs.gather(1, index), lens
