"""Weight-sharing supernets (issue #16): one network trained once, whose sub-networks are ordinary
genotypes with inherited weights.

- `Supernet(largest)`: the largest genotype's network with elastic depth, kernel, expansion, width and SE
  (on/off, ratio) per MBConv stage; `set_active(genotype)` runs it as that sub-network.
- `ElasticSpace(space)`: which dimensions of a search space are elastic, and the genotype of each choice.
- `extract(supernet, genotype)`: the sub-network's state_dict, for `build_model(genotype)`.
- `recalibrate_bn`, `sandwich_step`: BigNAS-style training pieces.
"""
from autocnn.supernet.model import Supernet, SupernetError, extract
from autocnn.supernet.space import ElasticSpace

__all__ = ["ElasticSpace", "Supernet", "SupernetError", "extract"]
from autocnn.supernet.train import recalibrate_bn, sandwich_step, train_supernet

__all__ += ["recalibrate_bn", "sandwich_step", "train_supernet"]
