"""The `forward` of a generated RecoveredModel, written from a wiring's roles.

One writer per wiring kind family: a stack calls its children in order; a sequence model
(encoder stack or RNN core) and an encoder-decoder are written step by step from the
roles the wiring assigned: input adapter(s), positions, core, final norm, reduction,
head. Each step is one readable line, and everything the weights cannot show is a plain
attribute the forward reads (`batch_first`, `causal_mask`, `scale_embedding`, `pos_dim`,
`reduce`), so the search can switch it on a built model and TorchScript compiles it.

Everything here is emitted through the renderer's checked accessors (`role`, `arg`,
`input_names`): no name from a checkpoint reaches code unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from recovery_core.errors import BuildError

if TYPE_CHECKING:
    from recovery_core.model.codegen import _Renderer

# Hidden names a sequence forward reads, by wiring kind, for wirings made without the list.
LEGACY_HIDDEN = {
    "encoder": ("scale_embedding", "causal_mask", "batch_first"),
    "seq2seq": ("scale_embedding", "causal_mask", "batch_first"),
    "rnn": (),
}

# Conventions for values a hand-made spec may not list.
DEFAULTS = {"reduce": "none", "pos_dim": 1, "scale_embedding": False, "batch_first": False}

CAUSAL_HELPER = '''
def causal_mask(size: int, device: torch.device) -> Tensor:
    """Position i may attend to positions 0..i only."""
    return torch.triu(torch.full((size, size), float("-inf"), device=device), diagonal=1)
'''

POSITIONS_HELPER = '''
def add_positions(x: Tensor, table: Tensor, dim: int) -> Tensor:
    """Adds the first x.size(dim) rows of a positional table along dimension `dim` of x."""
    rows = table.reshape(-1, table.size(-1))[: x.size(dim)]
    return x + (rows.unsqueeze(1) if dim == 0 else rows.unsqueeze(0))
'''

REDUCE_HELPER = '''
def reduce_steps(x: Tensor, how: str, dim: int) -> Tensor:
    """One output per sample from per-step outputs; "none" keeps every step."""
    if how == "mean":
        return x.mean(dim)
    if how == "max":
        return x.amax(dim)
    if how == "first":
        return x.select(dim, 0)
    if how == "last":
        return x.select(dim, -1)
    return x
'''

PE_TEMPLATE = '''
class {cls}(nn.Module):
    """Holds the checkpoint's positional table (buffer `{buffer}`) and adds it to a sequence."""

    def __init__(self, shape: tuple) -> None:
        super().__init__()
        self.register_buffer("{buffer}", torch.zeros(shape), persistent={persistent})

    def forward(self, x: Tensor, dim: int) -> Tensor:
        return add_positions(x, self.{buffer}, dim)
'''


def wiring_hidden(r: _Renderer) -> tuple[str, ...]:
    """The hidden names the wiring's forward reads (keyword arguments of the model)."""
    wiring = r.wiring
    if wiring is None or wiring.kind == "sequential":
        return ()
    return tuple(wiring.hidden) or LEGACY_HIDDEN.get(wiring.kind, ())


def write_forward(r: _Renderer) -> str:
    """The forward for the renderer's wiring (kind encoder, rnn or seq2seq)."""
    wiring = r.wiring
    assert wiring is not None
    hidden = wiring_hidden(r)
    used = set(hidden)
    for name in dict.fromkeys(hidden):  # in the wiring's order: the same file every time
        r.extra_init.append(f"self.{name} = {r._arg(name)}")
    if "scale_embedding" in used:
        r.extra_init.insert(0, f"self.d_model = {_model_width(r)}")
    if wiring.kind == "seq2seq":
        lines = _seq2seq(r, used)
    elif wiring.kind in ("encoder", "rnn"):
        lines = _sequence(r, used)
    else:
        raise BuildError(f"the wiring {wiring.kind!r} is not one we can write a forward for.")
    return "\n".join(lines)


def _roles(r: _Renderer) -> Mapping[str, str]:
    """The wiring's roles; only a wiring's forward is written here, so there is one."""
    assert r.wiring is not None
    return r.wiring.roles


def _model_width(r: _Renderer) -> int:
    roles = _roles(r)
    path = roles.get("embedding") or roles.get("src_embedding")
    if path is None:
        raise BuildError("scaling by √d needs an input adapter, and this forward has none.")
    args = r.spec.module(path).args
    width = args.get("embedding_dim") or args.get("out_features")
    if width is None:
        raise BuildError(f"{path} is neither an Embedding nor a Linear, so its width is unknown.")
    return int(width)


def _adapt(r: _Renderer, var: str, source: str, role: str, used: set[str]) -> list[str]:
    """`var = adapter(source)`, scaled and with positions added, as the choices say."""
    adapter = r._role(role, required=False)
    lines = [f"    {var} = {adapter}({source})" if adapter else f"    {var} = {source}"]
    if adapter and "scale_embedding" in used:
        lines += [
            "    if self.scale_embedding:",
            f"        {var} = {var} * math.sqrt(self.d_model)",
        ]
    lines += _positions(r, var, role)
    return lines


def _positions(r: _Renderer, var: str, adapter_role: str) -> list[str]:
    roles = _roles(r)
    own = {"src_embedding": "src_pos_encoding", "tgt_embedding": "tgt_pos_encoding"}
    module = r._role(own.get(adapter_role, ""), required=False) if adapter_role in own else None
    module = module or r._role("pos_encoding", required=False)
    if module:
        return [f"    {var} = {module}({var}, self.pos_dim)"]
    if "pos_embedding" in roles:
        r.helpers.add("positions")
        table = f"{r._role('pos_embedding')}.weight"
        return [f"    {var} = add_positions({var}, {table}, self.pos_dim)"]
    if "pos_table" in roles:
        r.helpers.add("positions")
        return [f"    {var} = add_positions({var}, {r._tensor(roles['pos_table'])}, self.pos_dim)"]
    return []


def _mask(r: _Renderer, var: str, mask: str) -> list[str]:
    r.helpers.add("causal")
    return [
        f"    {mask}: Optional[Tensor] = None",
        "    if self.causal_mask:",
        f"        {mask} = causal_mask({var}.size(1) if self.batch_first else {var}.size(0), "
        f"{var}.device)",
    ]


def _is_layer_list(r: _Renderer, role: str) -> bool:
    path = _roles(r).get(role)
    return path is not None and r.spec.module(path).type in ("ModuleList", "Sequential")


def _sequence(r: _Renderer, used: set[str]) -> list[str]:
    """inputs → adapter → positions → encoder stack or RNN → norm → reduce → head."""
    (x,) = r._input_names(("x",))
    lines = [f"def forward(self, {x}: Tensor) -> Tensor:"]
    lines += _adapt(r, "h", x, "embedding", used)
    if "rnn" in _roles(r):
        lines.append(
            f"    h = {r._role('rnn')}(h)[0]  # the outputs at every step; final states dropped"
        )
    else:
        lines += _mask(r, "h", "mask")
        encoder = r._role("encoder")
        if _is_layer_list(r, "encoder"):
            lines += [
                f"    for layer in {encoder}:",
                "        h = layer(h, src_mask=mask, is_causal=self.causal_mask)",
            ]
        else:
            lines.append(f"    h = {encoder}(h, mask=mask, is_causal=self.causal_mask)")
    lines += _ending(r, "h", used)
    return lines


def _seq2seq(r: _Renderer, used: set[str]) -> list[str]:
    """(src, tgt) → adapters → positions → Transformer or encoder + decoder → norm → head."""
    src, tgt = r._input_names(("src", "tgt"))
    lines = [f"def forward(self, {src}: Tensor, {tgt}: Tensor) -> Tensor:"]
    lines += _adapt(r, "s", src, "src_embedding", used)
    lines += _adapt(r, "t", tgt, "tgt_embedding", used)
    lines += _mask(r, "t", "tgt_mask")
    transformer = r._role("transformer", required=False)
    if transformer:
        # Saying the mask is causal spares nn.Transformer a look at its values (torch.export).
        lines.append(
            f"    out = {transformer}(s, t, tgt_mask=tgt_mask, tgt_is_causal=self.causal_mask)"
        )
    else:
        encoder, decoder = r._role("encoder"), r._role("decoder")
        if _is_layer_list(r, "encoder"):
            lines += [f"    for layer in {encoder}:", "        s = layer(s)", "    memory = s"]
        else:
            lines.append(f"    memory = {encoder}(s)")
        call = "tgt_mask=tgt_mask, tgt_is_causal=self.causal_mask"
        if _is_layer_list(r, "decoder"):
            lines += [
                f"    for layer in {decoder}:",
                f"        t = layer(t, memory, {call})",
                "    out = t",
            ]
        else:
            lines.append(f"    out = {decoder}(t, memory, {call})")
    lines += _ending(r, "out", used)
    return lines


def _ending(r: _Renderer, var: str, used: set[str]) -> list[str]:
    """final norm → one output per sample (when chosen) → head."""
    lines = []
    norm = r._role("final_norm", required=False)
    if norm:
        lines.append(f"    {var} = {norm}({var})")
    if "reduce" in used:
        r.helpers.add("reduce")
        lines.append(f"    {var} = reduce_steps({var}, self.reduce, 1 if self.batch_first else 0)")
    head = r._role("head", required=False)
    tied = r._role("tied_head", required=False)
    if head:
        lines.append(f"    return {head}({var})")
    elif tied:
        lines.append(f"    return nn.functional.linear({var}, {tied}.weight)  # tied to the input")
    else:
        lines.append(f"    return {var}")
    return lines
