"""Random number generation of ``torch.npu`` (torch_npu/npu/random.py) on the emulated NPU.

Each device has a default generator. The native device runs random kernels as CPU kernels;
when it offers per-device default generators (``default_generator(index)``) those are the
NPU's, otherwise the kernels draw from torch's CPU default generator and so does every
device here (seeding an NPU then also seeds the CPU).
"""

import torch
from torch._utils import _get_device_index

from torch_npu import _emulated

from . import _lazy_call, _lazy_init, device_count, is_initialized

__all__ = [
    "get_rng_state",
    "set_rng_state",
    "get_rng_state_all",
    "set_rng_state_all",
    "manual_seed",
    "manual_seed_all",
    "seed",
    "seed_all",
    "initial_seed",
]


def _default_generator(index: int) -> torch.Generator:
    lib = _emulated.lib()
    getter = getattr(lib, "default_generator", None)
    if getter is None:
        return torch.default_generator
    return getter(index)


def _current_index() -> int:
    return torch.accelerator.current_device_index()


def get_rng_state(device: int | str | torch.device = "npu") -> torch.Tensor:
    r"""Returns the random number generator state of the specified NPU as a ByteTensor."""
    _lazy_init()
    idx = _get_device_index(device, optional=True)
    return _default_generator(idx).get_state()


def get_rng_state_all():
    r"""Returns a list of ByteTensor representing the random number states of all devices."""
    return [get_rng_state(i) for i in range(device_count())]


def set_rng_state(new_state: torch.Tensor, device: int | str | torch.device = "npu") -> None:
    r"""Sets the random number generator state of the specified NPU."""
    if not is_initialized():
        with torch._C._DisableFuncTorch():
            # The callback runs later, at initialisation: keep a copy of the state.
            new_state = new_state.clone(memory_format=torch.contiguous_format)

    def cb():
        idx = _get_device_index(device, optional=True)
        _default_generator(idx).set_state(new_state)

    _lazy_call(cb)


def set_rng_state_all(new_states):
    r"""Sets the random number generator state of all devices."""
    for i, state in enumerate(new_states):
        set_rng_state(state, i)


def manual_seed(seed):
    r"""Sets the seed for generating random numbers for the current NPU."""
    seed = int(seed)

    def cb():
        _default_generator(_current_index()).manual_seed(seed)

    _lazy_call(cb)


def manual_seed_all(seed):
    r"""Sets the seed for generating random numbers on all NPUs."""
    seed = int(seed)

    def cb():
        for i in range(device_count()):
            _default_generator(i).manual_seed(seed)

    _lazy_call(cb)


def seed():
    r"""Sets the seed for generating random numbers to a random number for the current NPU."""

    def cb():
        _default_generator(_current_index()).seed()

    _lazy_call(cb)


def seed_all():
    r"""Sets the seed for generating random numbers to a random number on all NPUs."""

    def cb():
        random_seed = 0
        seeded = False
        for i in range(device_count()):
            generator = _default_generator(i)
            if not seeded:
                generator.seed()
                random_seed = generator.initial_seed()
                seeded = True
            else:
                generator.manual_seed(random_seed)

    _lazy_call(cb)


def initial_seed():
    r"""Returns the current random seed of the current NPU."""
    _lazy_init()
    return _default_generator(_current_index()).initial_seed()
