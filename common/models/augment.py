"""Feature-level augmentation that makes removal in-distribution for a classifier.

Every removal-based check (the evidence check, mask-in/mask-out faithfulness,
deletion curves) fills bins with the front end's silence. A classifier that
never saw silenced holes in training is thrown by them and reads their outline
(on quiet_evidence scenes a log-mel CNN trained without this kept 44 % accuracy
with its evidence silenced, chance 25 %, and fell to 38 % when as many of the
loudest distractor bins were silenced; with patches and loudest bins, 45 % and
98 %: it read a silenced chirp's diagonal outline; with strokes too, 36 % and
98 %; docs/leaderboards.md), so those checks measured the hole, not the evidence
(the out-of-distribution concern of ROAR, Hooker et al. 2019). Training with
random silenced patches, strokes and loudest bins teaches it that a hole, of
any outline, is no evidence for any class.
"""

import torch


class SilencePatches(torch.nn.Module):
    """In training mode, fill random parts of each clip with its silence: 1..``max_patches`` rectangles,
    1..``max_strokes`` straight strokes, and up to a ``max_loudest`` share of its loudest bins.

    A patch spans ``frames`` (low, high) frames and ``bins`` (low, high) bins,
    drawn uniformly; ``p``: the chance a clip gets any. ``silence``: the
    classifier's ``silence(X)`` (B, 1, 1), passed by the caller. Identity in
    eval mode and when every maximum is 0 (the default).
    """

    def __init__(self, max_patches=0, frames=(4, 40), bins=(2, 16), p=0.75, max_loudest=0.0, max_strokes=0):
        super().__init__()
        self.max_loudest = float(max_loudest)
        self.max_strokes = int(max_strokes)
        self.max_patches = int(max_patches)
        self.frames = tuple(int(v) for v in frames)
        self.bins = tuple(int(v) for v in bins)
        self.p = float(p)

    @property
    def active(self):
        """Whether it changes anything in training (the classifier skips computing the silence otherwise)."""
        return self.max_patches > 0 or self.max_loudest > 0 or self.max_strokes > 0

    def forward(self, X, silence):
        if not self.training or not self.active:
            return X
        B, T, F = X.shape
        keep = torch.ones_like(X)
        for b in range(B):
            if torch.rand(()) >= self.p:
                continue
            if self.max_loudest > 0:
                n = int(torch.rand(()) * self.max_loudest * T * F)
                if n:
                    loud = (X[b] - silence[b]).flatten().detach()
                    keep[b].view(-1)[loud.topk(n).indices] = 0
            for _ in range(int(torch.randint(1, self.max_strokes + 1, ())) if self.max_strokes > 0 else 0):
                self._stroke(keep[b], T, F)
            for _ in range(int(torch.randint(1, self.max_patches + 1, ())) if self.max_patches > 0 else 0):
                h = min(T, int(torch.randint(self.frames[0], self.frames[1] + 1, ())))
                w = min(F, int(torch.randint(self.bins[0], self.bins[1] + 1, ())))
                t0, f0 = int(torch.randint(0, T - h + 1, ())), int(torch.randint(0, F - w + 1, ()))
                keep[b, t0 : t0 + h, f0 : f0 + w] = 0
        return X * keep + silence * (1 - keep)

    def _stroke(self, keep, T, F):
        """A straight stroke of silence, 1-3 bins thick, at a random slope: the outline of no class's event
        in particular (a silenced chirp is such a stroke; its slope and place say nothing in training)."""
        t0, t1 = sorted(int(v) for v in torch.randint(0, T, (2,)))
        t1 = min(T - 1, max(t1, t0 + self.frames[0]))
        f0, f1 = (int(v) for v in torch.randint(0, F, (2,)))
        width = int(torch.randint(1, 4, ()))
        frames = torch.arange(t0, t1 + 1)
        centre = torch.round(f0 + (f1 - f0) * (frames - t0) / max(1, t1 - t0)).long()
        for offset in range(width):
            keep[frames, (centre + offset).clamp(0, F - 1)] = 0
