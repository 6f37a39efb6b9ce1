"""Multi-scale quantizers (VAR paper, Sec. 3.3); importing this package registers them in ``QUANTIZERS``.

* ``msvq`` — :class:`MultiScaleVQ`, VAR's multi-scale residual VQ (loads the released VQVAE weights);
* ``msfsq`` — :class:`MultiScaleFSQ`, the same residual scheme with finite scalar quantization;
* ``msibq`` — :class:`MultiScaleIBQ`, index backpropagation quantization (gradients reach every code);
* ``mssimvq`` — :class:`MultiScaleSimVQ`, SimVQ's frozen basis times one learned linear map;
* ``msbsq`` — :class:`MultiScaleBSQ`, binary spherical quantization (2^bits implicit codes, bit-wise head).
"""

from varkit.quantizers.bsq import MultiScaleBSQ
from varkit.quantizers.ibq import MultiScaleIBQ
from varkit.quantizers.msfsq import MultiScaleFSQ
from varkit.quantizers.msvq import MultiScaleVQ
from varkit.quantizers.phi import PhiConv, ResidualPhi
from varkit.quantizers.residual import MultiScaleResidualQuantizer
from varkit.quantizers.simvq import MultiScaleSimVQ

__all__ = [
    "MultiScaleBSQ",
    "MultiScaleFSQ",
    "MultiScaleIBQ",
    "MultiScaleResidualQuantizer",
    "MultiScaleSimVQ",
    "MultiScaleVQ",
    "PhiConv",
    "ResidualPhi",
]
