"""Triton 3.6's interpreter (TRITON_INTERPRET=1), made faithful enough to check our kernels' numbers on a CPU. It is
imported by the *_interpreter_check.py scripts beside it, before they import a kernel. It makes three fixes:

- a tensor as a loop bound: the interpreter takes int() of the tensor's (1,)-shaped data, which numpy 2 refuses, so
  tl.range(tl.program_id(0), ...) (a persistent loop) fails there alone; here it takes the one element, as compiled
  code does;
- tl.dot of bf16 operands: the interpreter stores bf16 as uint16 and multiplies those raw bits; here it widens them
  to fp32 first;
- f32 -> bf16 casts: the interpreter truncates; the GPU's cvt.rn rounds to nearest even, as ml_dtypes does here.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

tl = interpreter.tl
_patch_tensor = interpreter._patch_lang_tensor
_create_dot = interpreter.InterpreterBuilder.create_dot
_cast = interpreter.InterpreterBuilder.cast_impl


def _patch_lang_tensor(tensor, scope):
    _patch_tensor(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))


def _bf16_as_f32(handle):
    if handle.dtype.scalar == tl.bfloat16:
        bits = handle.data.astype(np.uint32) << 16
        return interpreter.TensorHandle(bits.view(np.float32), tl.float32)
    return handle


def _create_dot_widened(self, a, b, d, input_precision, max_num_imprecise_acc):
    return _create_dot(self, _bf16_as_f32(a), _bf16_as_f32(b), d, input_precision, max_num_imprecise_acc)


def _cast_rounding_to_nearest(self, src, dst_type):
    if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
        return interpreter.TensorHandle(src.data.astype(ml_dtypes.bfloat16).view(np.uint16), tl.bfloat16)
    return _cast(self, src, dst_type)


interpreter._patch_lang_tensor = _patch_lang_tensor
interpreter.InterpreterBuilder.create_dot = _create_dot_widened
interpreter.InterpreterBuilder.cast_impl = _cast_rounding_to_nearest
