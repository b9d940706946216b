"""Reading a TFLite flatbuffer (tensors, constants, operators) and running its convolutional body in PyTorch.

The reader uses the ``tflite`` package (the schema's generated flatbuffer
accessors); nothing here executes TensorFlow. ``GraphBody`` turns a span of a
graph's operators into ``nn.Module``s, one per operator (fused activations
and the ``x * sigmoid(x)`` pair become their own ``ReLU`` / ``SiLU``), run in
the graph's order on NCHW tensors: gradients, forward hooks by name and
module-based LRP rules all see ordinary PyTorch layers.

Shape bookkeeping (``SHAPE``, ``STRIDED_SLICE``, ``PACK`` feeding a
``RESHAPE``'s shape) is dropped: PyTorch knows the shapes. The supported ops
are the ones convolutional audio classifiers export (BirdNET V2.4 uses all of
them); any other op in the span is a clear error naming it.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import CheckpointError, ToolkitError

# NHWC axis -> NCHW axis
_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}
# tflite ActivationFunctionType
_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}
_SAME, _VALID = 0, 1
# ops that only compute shapes (for a RESHAPE's target): dropped
_SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}


@dataclass
class TFLiteTensor:
    index: int
    name: str
    shape: tuple
    data: np.ndarray = None  # the constant's value, None for a computed tensor


@dataclass
class TFLiteOp:
    index: int
    kind: str
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)


def _require_tflite():
    try:
        import tflite
    except ImportError as exc:
        raise ToolkitError("Reading a .tflite model needs the `tflite` flatbuffer reader: pip install tflite") from exc
    return tflite


def _options(tflite, op):
    """The operator's builtin options as a dict of their accessor names (e.g. ``StrideH``)."""
    kinds = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}
    kind = kinds.get(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    if kind in (None, "NONE") or table is None or not hasattr(tflite, kind):
        return {}
    options = getattr(tflite, kind)()
    options.Init(table.Bytes, table.Pos)
    out = {}
    for name in dir(options):
        if (
            not name[:1].isupper()
            or name.startswith(("Init", "GetRoot"))
            or name.endswith(("AsNumpy", "IsNone", "Length"))
        ):
            continue
        try:
            out[name] = getattr(options, name)()
        except TypeError:  # vector accessors take an index
            continue
    return out


class TFLiteGraph:
    """The first subgraph of a .tflite file: ``tensors`` (by index), ``ops`` (in execution order), ``inputs``/``outputs``."""

    def __init__(self, path):
        tflite = _require_tflite()
        self.path = Path(path)
        try:
            buffer = self.path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"Cannot read the TFLite model {self.path}: {exc}") from exc
        try:
            self._read(tflite, buffer)
        except CheckpointError:
            raise
        except Exception as exc:  # a truncated or foreign file fails inside the flatbuffer accessors
            raise CheckpointError(
                f"{self.path} is not a readable TFLite model ({type(exc).__name__}: {exc}); reinstall the package that ships it"
            ) from exc
        self._by_name = {t.name: t for t in self.tensors}

    def _read(self, tflite, buffer):
        model = tflite.Model.GetRootAsModel(buffer, 0)
        graph = model.Subgraphs(0)
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.tensors = []
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            data = None
            raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() > 0 else 0
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            if not isinstance(raw, int) and raw.size:
                dtype = {0: np.float32, 2: np.int32, 4: np.int64, 1: np.float16}.get(t.Type())
                if dtype is not None:
                    data = (
                        np.frombuffer(raw.tobytes(), dtype=dtype)
                        .reshape(shape)
                        .astype(np.float32 if dtype == np.float16 else dtype)
                    )
            self.tensors.append(TFLiteTensor(i, t.Name().decode(), shape, data))
        self.ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            self.ops.append(
                TFLiteOp(
                    i,
                    kind,
                    [int(j) for j in op.InputsAsNumpy()],
                    [int(j) for j in op.OutputsAsNumpy()],
                    _options(tflite, op),
                )
            )
        self.inputs = [int(j) for j in graph.InputsAsNumpy()]
        self.outputs = [int(j) for j in graph.OutputsAsNumpy()]

    def tensor(self, name):
        """The tensor called ``name`` (a KeyError listing similar names if there is none)."""
        if name not in self._by_name:
            close = [n for n in self._by_name if name.split("/")[-1] in n][:5]
            raise KeyError(f"{self.path.name} has no tensor {name!r}; similar: {close}")
        return self._by_name[name]

    def constant(self, name):
        data = self.tensor(name).data
        if data is None:
            raise KeyError(f"Tensor {name!r} of {self.path.name} is computed, not a constant")
        return data

    def producer(self, tensor_index):
        """The op writing ``tensor_index`` (None for graph inputs and constants)."""
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None


# -- the operators as modules ------------------------------------------------------------------


def _same_padding(size, kernel, stride, dilation=1):
    """(before, after) of TensorFlow's SAME padding along one axis (the extra pixel goes after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's SAME padding computed from the input's size (asymmetric where TF's is)."""

    def __init__(self, *args, tf_same=False, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.tf_same = bool(tf_same)

    def forward(self, x):
        if self.tf_same:
            top, bottom = _same_padding(x.shape[2], self.kernel_size[0], self.stride[0], self.dilation[0])
            left, right = _same_padding(x.shape[3], self.kernel_size[1], self.stride[1], self.dilation[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class Add(nn.Module):
    """a + b. A submodule ``summation``, when an explainer registers one (LRP's residual rule), computes the sum
    instead: it gets the two summands stacked on a last axis (zennit's ``Sum`` layer takes that)."""

    def forward(self, a, b):
        summation = self._modules.get("summation")  # a submodule an explainer registered, else None
        if summation is not None:
            return summation(torch.stack(torch.broadcast_tensors(a, b), dim=-1))
        return a + b


class Mul(nn.Module):
    """Elementwise product of two computed tensors (a squeeze-excitation gate times its block's map).

    ``gate_as_constant``, when an explainer sets it (LRP), makes the gate (the operand that is one value per
    channel, 1 x 1) a constant whose product passes the gradient unchanged: all relevance goes to the gated map."""

    gate_as_constant = False

    def forward(self, a, b):
        if self.gate_as_constant:
            if a.shape[-2:] == (1, 1) and b.shape[-2:] != (1, 1):
                a, b = b, a
            if b.shape[-2:] == (1, 1) and a.shape[-2:] != (1, 1):
                return a + (a * b - a).detach()  # the value a * gate, the gradient (relevance) all to a
        return a * b


class ConstantAffine(nn.Module):
    """x * scale or x + shift with a per-channel constant (a BatchNorm TFLite split into MUL and ADD)."""

    def __init__(self, value, op):
        super().__init__()
        self.register_buffer("value", value)
        self.op = op

    pass_through = False  # set by an explainer (LRP): the gradient (relevance) passes unchanged, as a BatchNorm's

    def forward(self, x):
        if self.op != "mul":
            return x + self.value
        if self.pass_through:
            return x + (x * self.value - x).detach()
        return x * self.value

    def extra_repr(self):
        return f"{self.op}, {tuple(self.value.shape)}"


class Mean(nn.Module):
    def __init__(self, dims, keepdim):
        super().__init__()
        self.dims, self.keepdim = tuple(dims), bool(keepdim)

    def forward(self, x):
        return x.mean(dim=self.dims, keepdim=self.keepdim)

    def extra_repr(self):
        return f"dims={self.dims}, keepdim={self.keepdim}"


class ToMap(nn.Module):
    """(B, C) -> (B, C, 1, 1): a RESHAPE of pooled channels to a 1 x 1 map."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1, 1, 1)


class Concat(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)


def _module_name(graph, op, used):
    """A module name from the op's output tensor (``model/BLOCK_4-1_SE_CONV_1/Conv2D`` -> ``BLOCK_4_1_SE_CONV_1``)."""
    name = graph.tensors[op.outputs[0]].name.split(";")[0]
    parts = [p for p in name.split("/") if p and p != "model"]
    base = (parts[0] if parts else f"op{op.index}").replace("-", "_").replace(".", "_")
    candidate, k = base, 1
    while candidate in used:
        k += 1
        candidate = f"{base}_{k}"
    used.add(candidate)
    return candidate


class GraphBody(nn.Module):
    """Operators ``ops`` of a TFLite graph as modules, run in order on NCHW tensors.

    ``start``: the tensor index fed to ``forward`` (NCHW); ``end``: the tensor
    returned. Intermediate tensors are freed after their last use.
    """

    def __init__(self, graph, ops, start, end):
        super().__init__()
        self.start, self.end = int(start), int(end)
        self.layers = nn.ModuleDict()
        self.schedule = []  # (layer name, input tensor indices, output tensor index)
        data = {self.start}
        used = set()
        consumers = {}
        for op in ops:
            for j in op.inputs:
                consumers.setdefault(j, []).append(op)
        skip = set()
        for op in ops:
            if op.index in skip:
                continue
            ins = [j for j in op.inputs if j in data]
            if not ins or op.kind in _SHAPE_OPS:  # constants, or shape bookkeeping PyTorch does not need
                continue
            for name, module, inputs, out in self._convert(graph, op, ins, consumers, skip, used):
                self.layers[name] = module
                self.schedule.append((name, inputs, out))
                data.add(out)
        if self.end not in data:
            raise CheckpointError(
                f"The graph's tensor {graph.tensors[self.end].name} is not computed from the start tensor"
            )
        last_use = {}
        for k, (_, inputs, _) in enumerate(self.schedule):
            for j in inputs:
                last_use[j] = k
        self._free_after = [
            [j for j in inputs if last_use.get(j) == k and j != self.end]
            for k, (_, inputs, _) in enumerate(self.schedule)
        ]

    def _convert(self, graph, op, ins, consumers, skip, used):
        """[(name, module, input tensor indices, output tensor index)] for one op, in order."""
        kind, opts = op.kind, op.options
        name = _module_name(graph, op, used)
        out = op.outputs[0]
        activation = _ACTIVATIONS.get(opts.get("FusedActivationFunction", 0), "unsupported")
        if activation == "unsupported":
            raise CheckpointError(f"Op {op.index} ({kind}) has a fused activation this port does not know")

        def with_activation(module):
            if activation is None:
                return [(name, module, ins, out)]
            # the op's own result gets a private index (negative: never a graph tensor), its activation writes `out`
            act = nn.ReLU() if activation == "relu" else nn.ReLU6()
            return [(name, module, ins, -1 - out), (f"{name}_{activation}", act, [-1 - out], out)]

        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = torch.from_numpy(graph.tensors[op.inputs[1]].data.copy())
            bias = graph.tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            if kind == "CONV_2D":  # OHWI -> OIHW
                weight = weight.permute(0, 3, 1, 2)
                groups = 1
            else:  # 1 x H x W x (C * multiplier) -> (C * multiplier) x 1 x H x W
                if opts.get("DepthMultiplier", 1) != 1:
                    raise CheckpointError(
                        f"Op {op.index}: depthwise convolutions with a depth multiplier are not ported"
                    )
                weight = weight.permute(3, 0, 1, 2)
                groups = weight.shape[0]
            conv = TFConv2d(
                weight.shape[1] * groups,
                weight.shape[0],
                tuple(weight.shape[2:]),
                stride=(opts["StrideH"], opts["StrideW"]),
                dilation=(opts.get("DilationHFactor", 1), opts.get("DilationWFactor", 1)),
                groups=groups,
                bias=bias is not None,
                tf_same=opts["Padding"] == _SAME,
            )
            with torch.no_grad():
                conv.weight.copy_(weight)
                if bias is not None:
                    conv.bias.copy_(torch.from_numpy(bias.copy()))
            return with_activation(conv)
        if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            if opts["Padding"] != _VALID:
                raise CheckpointError(f"Op {op.index}: SAME-padded pooling is not ported")
            pool = (nn.AvgPool2d if kind == "AVERAGE_POOL_2D" else nn.MaxPool2d)(
                (opts["FilterHeight"], opts["FilterWidth"]), stride=(opts["StrideH"], opts["StrideW"])
            )
            return with_activation(pool)
        if kind == "LOGISTIC":
            # x * sigmoid(x) (swish): one SiLU module, so rules and hooks see an activation
            (x,) = ins
            users = consumers.get(out, [])
            if len(users) == 1 and users[0].kind == "MUL" and sorted(users[0].inputs) == sorted([x, out]):
                skip.add(users[0].index)
                used.discard(name)
                return [(_module_name(graph, users[0], used), nn.SiLU(), [x], users[0].outputs[0])]
            return [(name, nn.Sigmoid(), ins, out)]
        if kind in ("ADD", "MUL"):
            constants = [j for j in op.inputs if j not in ins]
            if len(ins) == 2:
                return with_activation(Add() if kind == "ADD" else Mul())
            (const,) = constants
            value = torch.from_numpy(np.asarray(graph.tensors[const].data, dtype=np.float32).copy())
            if value.ndim == 1 and value.numel() > 1:  # per channel (NHWC's last axis)
                value = value.reshape(1, -1, 1, 1)
            return with_activation(ConstantAffine(value, kind.lower()))
        if kind == "MEAN":
            axes = np.atleast_1d(graph.tensors[op.inputs[1]].data)
            return [(name, Mean([_NCHW_AXIS[int(a)] for a in axes], opts.get("KeepDims", False)), ins, out)]
        if kind == "RESHAPE":
            target = graph.tensors[out].shape
            if len(target) == 4 and target[1] == 1 and target[2] == 1:
                return [(name, ToMap(), ins[:1], out)]
            raise CheckpointError(f"Op {op.index}: a RESHAPE to {target} is not ported")
        if kind == "CONCATENATION":
            return with_activation(Concat(_NCHW_AXIS[int(opts["Axis"])]))
        if kind == "PAD":
            pads = graph.tensors[op.inputs[1]].data  # (4, 2), NHWC rows
            if pads[0].any() or pads[3].any():
                raise CheckpointError(f"Op {op.index}: padding of the batch or channel axis is not ported")
            return [
                (name, nn.ZeroPad2d((int(pads[2, 0]), int(pads[2, 1]), int(pads[1, 0]), int(pads[1, 1]))), ins, out)
            ]
        if kind == "FULLY_CONNECTED":
            weight = graph.tensors[op.inputs[1]].data
            bias = graph.tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weight.copy()))
                if bias is not None:
                    linear.bias.copy_(torch.from_numpy(bias.copy()))
            return with_activation(linear)
        raise CheckpointError(f"Op {op.index} ({kind}, output {graph.tensors[out].name}) is not supported by this port")

    def forward(self, x):
        env = {self.start: x}
        for k, entry in enumerate(self.schedule):
            name, inputs, out = entry
            env[out] = self.layers[name](*[env[j] for j in inputs])
            for j in self._free_after[k]:
                env.pop(j, None)
        return env[self.end]
