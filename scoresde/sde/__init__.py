"""Forward SDEs: the protocol, SDEs with a linear drift (closed-form and numerical), their
schedules and discrete chains, and the reverse-time process.

=========================  =====================================================================
module                     holds
=========================  =====================================================================
``sde.base``               :class:`SDE` (the protocol), :class:`ReverseSDE`, shape conventions
``sde.linear``             :class:`LinearDriftSDE`: ``dx = f(t) x dt + g(t) dw``, kernel and prior
``sde.closed_form``        :class:`VPSDE`, :class:`SubVPSDE`, :class:`VESDE`
``sde.numerical``          :class:`LinearSDE`: a user's ``f`` and ``g``, kernel by quadrature
``sde.schedules``          ``beta(t)`` schedules of the VP family (linear, cosine)
``sde.discrete``           the DDPM and SMLD chains of the VP and VE SDEs
=========================  =====================================================================
"""

from scoresde.sde.base import (
    SDE,
    ReverseSDE,
    ScoreFn,
    batch_broadcast,
    gaussian_logp,
    unchecked_times,
)
from scoresde.sde.closed_form import VESDE, VPSDE, SubVPSDE
from scoresde.sde.discrete import DDPMChain, DiscreteChain, SMLDChain
from scoresde.sde.linear import LinearDriftSDE
from scoresde.sde.numerical import LinearSDE
from scoresde.sde.schedules import SCHEDULES, BetaSchedule, CosineSchedule, LinearSchedule

__all__ = [
    "SDE",
    "ReverseSDE",
    "ScoreFn",
    "batch_broadcast",
    "gaussian_logp",
    "unchecked_times",
    "LinearDriftSDE",
    "LinearSDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "BetaSchedule",
    "LinearSchedule",
    "CosineSchedule",
    "SCHEDULES",
    "DiscreteChain",
    "DDPMChain",
    "SMLDChain",
]
