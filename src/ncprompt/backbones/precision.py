"""Mixed precision for the frozen encoders: autocast dtype, LayerNorm kept in fp32, a grad scaler.

``precision`` is one of

* ``fp32``: no autocast (the default on CPU: results do not depend on the CPU's bf16 support);
* ``bf16``: ``torch.autocast(dtype=bfloat16)``: matmuls/attention in bf16 (8-bit mantissa,
  relative rounding 2^-8 ~ 0.4%), the residual stream, LayerNorms and every loss in fp32. Fast
  on GPUs (Ampere+) and on CPUs with native bf16 (AMX or AVX512_BF16); elsewhere oneDNN emulates
  it and it is *slower* than fp32 (a warning says so);
* ``fp16``: ``torch.autocast(dtype=float16)`` for GPUs without bf16 (Volta/Turing): the loss is
  multiplied by a dynamic scale before ``backward`` so small fp16 gradients do not underflow
  (:func:`make_grad_scaler`, :func:`backward_and_step`). Not offered on CPU.

LayerNorm in fp32: CUDA's autocast runs ``layer_norm`` in fp32, CPU's runs it in its input's dtype,
which in open_clip's towers is the fp32 residual stream; :func:`keep_layernorm_fp32` makes it hold
for any input. Logits and losses are computed from ``.float()`` features outside autocast.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_warned: list[bool] = []  # the emulated-bf16 warning is given once per process


class PrecisionError(ValueError):
    """An unusable precision/device combination; the message says which one to use instead."""


def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AMX-BF16 or AVX512_BF16), as torch reports it."""
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        c = caps()
        return bool(c.get("amx_bf16") or c.get("avx512_bf16"))
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
                or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def default_precision(device: torch.device) -> str:
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU (opt in with ``bf16``)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device``; warns when bf16 would be emulated on this CPU."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise PrecisionError("precision fp16 is for GPUs without bf16; on CPU use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrecisionError(f"{torch.cuda.get_device_name(device)} has no bf16; use --precision fp16 (with a "
                             "grad scaler) or fp32")
    if precision == "bf16" and device.type == "cpu" and not cpu_native_bf16() and not _warned:
        _warned.append(True)
        log.warning("this CPU has no native bf16 (no AMX-BF16/AVX512_BF16 visible; torch capability %s): bf16 is "
                    "emulated and slower than fp32; use --precision fp32", torch.backends.cpu.get_cpu_capability())
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def _ln_fp32_input(module: nn.Module, args: tuple) -> tuple | None:
    x = args[0]
    if x.is_floating_point() and x.dtype != torch.float32:
        return (x.float(), *args[1:])
    return None


def keep_layernorm_fp32(model: nn.Module) -> int:
    """Make every ``nn.LayerNorm`` of ``model`` compute in fp32 under autocast (idempotent).

    CUDA's autocast runs ``layer_norm`` in fp32 whatever its input; CPU's runs it in its input's
    dtype. open_clip feeds LayerNorms the fp32 residual stream, so both compute in fp32; the hooks
    guarantee it for any input (a bf16/fp16 input is cast to fp32 first) and do nothing to fp32
    inputs, so fp32 results are bitwise unchanged. Returns the number of LayerNorms hooked.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, nn.LayerNorm) and not getattr(m, "_ncprompt_fp32_hooked", False):
            m.register_forward_pre_hook(_ln_fp32_input)
            m._ncprompt_fp32_hooked = True  # type: ignore[attr-defined]
            n += 1
    return n


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A dynamic loss scaler, enabled only for fp16 (bf16 has fp32's exponent range and needs none).

    Disabled scalers pass losses and steps through unchanged, so the trainer can always use one.
    """
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def backward_and_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                      max_grad_norm: float = 0.0, params: Iterable[torch.Tensor] | None = None) -> None:
    """``zero_grad``, backward of ``scale * loss``, unscale, optional clipping, step, scale update.

    With ``scaler=None`` (or a disabled one) this is exactly ``loss.backward(); clip; opt.step()``.
    Under fp16 a step whose gradients overflowed is skipped and the scale halves (GradScaler).
    """
    opt.zero_grad(set_to_none=True)
    if scaler is None or not scaler.is_enabled():
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(params or _opt_params(opt)), max_grad_norm)
        opt.step()
        return
    scaler.scale(loss).backward()
    if max_grad_norm > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(list(params or _opt_params(opt)), max_grad_norm)
    scaler.step(opt)
    scaler.update()


def _opt_params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]
