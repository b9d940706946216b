"""Does an explanation rank the source that defines the class first? (audioLIME on synthetic music.)

On the synthetic GTZAN every genre has one discriminative source (the others
are shared between genres), and its stems are known. Any explanation's
components, separated sources or time-mel grid cells alike, are judged the
same way, on the classifier's grid:

* ``source_shares``: each bin's share of the oracle sources' power, r_s(t, f) =
  P_s / sum_j P_j (the noise floor among them);
* ``discriminative_share``: a component's power-weighted mean of r_disc over its
  bins, i.e. how much of what it holds is the discriminative source (a stem's
  power for separated sources; the mixture's power inside the cell for a grid
  cell);
* a clip is a hit when its top-weighted component is mostly the discriminative
  source (share above ``threshold``, 0.5), and ``rank1_rate`` is the share of
  hits. A control: the component holding the most energy, ranked first whatever
  the model does (``loudest_component``).
"""

import numpy as np
import torch


def power_on_grid(front_end, wavs):
    """(n, T, F) power of each waveform of ``wavs`` (n, samples) on the front end's grid."""
    return 10.0 ** (front_end.to_db(front_end(wavs)) / 10.0)


def source_shares(source_powers):
    """(S, T, F) each source's share of each bin's power."""
    return source_powers / source_powers.sum(0, keepdim=True).clamp(min=1e-30)


def discriminative_share(part_powers, shares_of_discriminative):
    """(K,) for parts' powers (K, T, F): how much of each part is the discriminative source (power-weighted)."""
    weighted = (part_powers * shares_of_discriminative[None]).flatten(1).sum(1)
    return weighted / part_powers.flatten(1).sum(1).clamp(min=1e-30)


def cell_powers(mix_power, ids):
    """(K, T, F) the mixture's power inside each component of an id map ``ids`` (T, F) (grid cells)."""
    K = int(ids.max()) + 1
    return torch.stack([mix_power * (ids == k) for k in range(K)])


def is_hit(weights, shares, threshold=0.5):
    """Whether the component with the largest weight is mostly the discriminative source."""
    return bool(shares[int(torch.as_tensor(weights).argmax())] > threshold)


def rank1_rate(hits):
    """(mean, 95 % bootstrap interval) of a list of hits."""
    from common.metrics.uncertainty import bootstrap_interval

    return bootstrap_interval(np.asarray(hits, dtype=np.float64))
