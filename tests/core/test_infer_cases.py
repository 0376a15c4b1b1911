"""Inference on the hard cases: ambiguities, missing metadata, keys nothing explains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recovery_core.errors import HyperparameterError, InferenceError
from recovery_core.infer import infer_spec
from recovery_core.infer.registry import TYPES
from recovery_core.infer.retype import choose_type
from recovery_core.io.checkpoint import Checkpoint, TensorInfo
from recovery_core.model.build import build_model
from tests.zoo import ZOO_BY_NAME

# PReLU is its own family (infer/families/prelu.py); these run while it is registered.
NEEDS_PRELU = pytest.mark.skipif("PReLU" not in TYPES, reason="no PReLU family is registered")


def infer(model: nn.Module, **kw):
    return infer_spec(Checkpoint.from_state_dict(model.state_dict(), **kw))


def infer_shapes(shapes: dict[str, tuple[int, ...]]):
    """A checkpoint made of shapes only, as a file's header would give them."""
    return infer_spec(Checkpoint.from_state_dict({k: torch.empty(s) for k, s in shapes.items()}))


class Named(nn.Module):
    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


def test_an_empty_checkpoint_is_a_user_error():
    empty = Checkpoint(tensors=(), format="memory", _read=lambda name: None)
    with pytest.raises(InferenceError, match="no tensors"):
        infer_spec(empty)


def test_a_bare_layer_is_the_root():
    spec = infer(nn.Linear(4, 3))
    assert (spec.root.type, dict(spec.root.args)) == (
        "Linear",
        {"in_features": 4, "out_features": 3, "bias": True},
    )
    assert "weight (3, 4)" in spec.root.evidence and "in_features=4" in spec.root.evidence


def test_without_metadata_gaps_in_the_numbering_are_parameter_less_children():
    case = ZOO_BY_NAME["mlp_sequential"]
    spec = infer(case.make(), module_paths=())
    assert spec.root.type == "Sequential"
    assert [m.type for m in spec.root.children] == [
        "Linear",
        "Unknown",
        "Unknown",
        "Linear",
        "Unknown",
        "Linear",
    ]
    assert case.hidden["4"] in spec.hyperparameter("4").candidates
    assert spec.wiring is not None and spec.wiring.kind == "sequential"


def test_numbered_children_without_gaps_or_metadata_are_a_modulelist_that_may_be_a_sequential():
    spec = infer(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), module_paths=())
    assert spec.root.type == "ModuleList"
    assert spec.root.alternatives == ("Sequential",) and spec.root.note
    assert spec.wiring is not None and spec.wiring.kind == "sequential"


def test_conv_transpose_is_decided_by_a_bias_that_fits_only_the_second_dimension():
    spec = infer(Named(up=nn.ConvTranspose2d(4, 8, 3)))
    up = spec.module("up")
    assert up.type == "ConvTranspose2d" and up.alternatives == ()
    assert (up.args["in_channels"], up.args["out_channels"]) == (4, 8)


def test_conv_names_convtranspose_as_the_alternative():
    conv = infer(Named(conv=nn.Conv2d(8, 8, 3))).module("conv")
    assert conv.type == "Conv2d" and conv.alternatives == ("ConvTranspose2d",)
    assert "ConvTranspose2d" in conv.note


def test_batchnorm_without_a_convolution_is_1d_with_the_others_as_alternatives():
    spec = infer(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)))
    bn = spec.module("1")
    assert bn.type == "BatchNorm1d"
    assert set(bn.alternatives) == {"InstanceNorm1d", "BatchNorm2d", "BatchNorm3d"}
    assert set(bn.keys) == {
        f"1.{k}" for k in nn.BatchNorm1d(6).state_dict()
    }  # num_batches_tracked too


def test_groupnorm_by_name_and_layernorm_otherwise():
    spec = infer(
        Named(fc=nn.Linear(4, 8), gn1=nn.GroupNorm(2, 8), ln=nn.LayerNorm(8), norm=nn.LayerNorm(8))
    )
    assert spec.module("gn1").type == "GroupNorm"
    assert spec.module("ln").type == "LayerNorm"
    norm = spec.module("norm")
    assert norm.type == "LayerNorm" and norm.alternatives == ("GroupNorm",)
    assert spec.hyperparameter("num_groups").candidates == (1, 2, 4, 8)


def test_layernorm_without_bias_names_rmsnorm_as_the_alternative():
    spec = infer(ZOO_BY_NAME["layernorm_no_bias"].make())
    assert spec.module("1").alternatives[0] == "RMSNorm"
    assert any("RMSNorm" in note for note in spec.notes)


def test_a_bias_fitting_only_the_second_dimension_proves_a_transposed_conv1d():
    transposed = infer_shapes({"qkv.weight": (16, 48), "qkv.bias": (48,), "ln.weight": (16,)})
    qkv = transposed.module("qkv")
    assert (qkv.type, dict(qkv.args), qkv.alternatives) == ("HFConv1D", {"nf": 48, "nx": 16}, ())
    assert transposed.unexplained_keys == ()


def test_a_square_weight_is_conv1d_only_where_a_namesake_proves_the_layout():
    shapes = {
        "mlp.out.weight": (64, 16),  # bias (16,) fits only dim 1: stored (in, out)
        "mlp.out.bias": (16,),
        "attn.out.weight": (16, 16),
        "attn.out.bias": (16,),
        "other.weight": (16, 16),
        "other.bias": (16,),
    }
    spec = infer_shapes(shapes)
    assert spec.module("mlp.out").type == "HFConv1D" and spec.module("mlp.out").alternatives == ()
    square = spec.module("attn.out")
    assert square.type == "HFConv1D" and square.alternatives == ("Linear",) and square.note
    assert spec.module("other").type == "Linear"


def test_keys_no_detector_explains_are_kept_as_is_on_their_module():
    spec = infer_shapes(
        {"cls_token": (1, 1, 8), "blocks.0.weight": (8, 8), "odd.scale": (2, 3, 4, 5, 6, 7)}
    )
    assert set(spec.unexplained_keys) == {"cls_token", "odd.scale"}
    owned = {k for m in spec.modules() for k in m.keys}
    assert owned == {"cls_token", "blocks.0.weight", "odd.scale"}
    (token,) = spec.root.kept
    assert (token.name, token.shape, token.kind) == ("cls_token", (1, 1, 8), "parameter")
    assert "learned token" in token.why
    assert spec.module("odd").kept[0].kind == "parameter"
    assert spec.wiring is None


def test_integer_tensors_and_buffer_names_are_kept_as_buffers():
    state = {
        "table": torch.zeros(9, 2),
        "index": torch.zeros(4, 4, dtype=torch.int64),
        "flags": torch.zeros(3, dtype=torch.bool),
        "stats.running_mean": torch.zeros(5),
        "stats.extra": torch.zeros(5),
    }
    spec = infer_spec(Checkpoint.from_state_dict(state))
    kinds = {t.name: t.kind for m in spec.modules() for t in m.kept}
    assert kinds == {
        "table": "parameter",
        "index": "buffer",
        "flags": "buffer",
        "running_mean": "buffer",
        "extra": "parameter",
    }


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
def test_attention_and_layers_without_bias():
    model = nn.Transformer(
        d_model=16,
        nhead=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        dim_feedforward=24,
        bias=False,
        batch_first=True,
    )
    spec = infer(model)
    assert spec.root.type == "Transformer" and spec.root.args["bias"] is False
    assert spec.module("encoder.layers.0.self_attn").args["bias"] is False
    assert spec.unexplained_keys == ()


def test_encoder_without_final_norm_and_lone_encoder_layer():
    layer = nn.TransformerEncoderLayer(16, 4, 32)
    spec = infer(
        Named(
            enc=nn.TransformerEncoder(layer, 3, enable_nested_tensor=False),
            solo=nn.TransformerEncoderLayer(16, 4, 32),
        )
    )
    assert dict(spec.module("enc").args) == {"num_layers": 3, "has_norm": False}
    assert spec.module("solo").type == "TransformerEncoderLayer"
    assert spec.value("num_encoder_layers") == 3


def test_a_layer_that_differs_from_layer_0_is_not_a_stack():
    shapes = {
        k: tuple(v.shape)
        for k, v in nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 4, 32), 2, enable_nested_tensor=False
        )
        .state_dict()
        .items()
    }
    shapes["layers.1.linear1.weight"] = (48, 16)
    shapes["layers.1.linear1.bias"] = (48,)
    shapes["layers.1.linear2.weight"] = (16, 48)
    spec = infer_shapes({f"enc.{k}": s for k, s in shapes.items()})
    assert spec.module("enc").type == "Module"
    assert spec.module("enc.layers.1").type == "TransformerEncoderLayer"
    assert spec.module("enc.layers.1").args["dim_feedforward"] == 48


def test_a_positional_buffer_sets_the_batch_first_default():
    seq_first = {"emb.weight": (10, 8), "pos.pe": (12, 1, 8)}
    layer = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16), 1, enable_nested_tensor=False
    )
    seq_first |= {f"encoder.{k}": tuple(v.shape) for k, v in layer.state_dict().items()}
    spec = infer_shapes(seq_first)
    assert spec.wiring.kind == "encoder"
    assert (
        spec.value("batch_first") is False
        and "(12, 1, 8)" in spec.hyperparameter("batch_first").evidence
    )
    assert spec.wiring.inputs[0].shape == (2, 7)


def test_two_modules_fixing_the_same_name_differently_keep_both():
    spec = infer(Named(a=nn.LSTM(4, 8), b=nn.LSTM(8, 6)))
    assert spec.value("hidden_size") == 8
    assert spec.value("b.hidden_size") == 6


def test_unknown_children_are_guessed_from_their_names():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.gelu = nn.GELU()
            self.drop = nn.Dropout()

    spec = infer(Block())
    assert (spec.value("gelu"), spec.value("drop")) == ("GELU", "Dropout")
    assert "ReLU" in spec.hyperparameter("gelu").candidates


def test_nothing_reads_tensor_values_even_for_unexplained_keys():
    shapes = {"weird.scale": TensorInfo("weird.scale", (2, 3, 4, 5, 6, 7), "float32", 5040, 20160)}

    def refuse(name: str) -> torch.Tensor:
        raise AssertionError(name)

    checkpoint = Checkpoint(tensors=tuple(shapes.values()), format="memory", _read=refuse)
    assert infer_spec(checkpoint).unexplained_keys == ("weird.scale",)


def test_a_feature_map_meets_a_linear_only_through_a_possible_flatten():
    class ConvHead(nn.Module):
        def __init__(self, between: nn.Module | None):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            if between is not None:
                self.between = between
            self.fc = nn.Linear(4 * 8 * 8, 2)

    assert infer(ConvHead(None)).wiring is None  # its forward must flatten somewhere we cannot see
    assert infer(Named(conv=nn.Conv2d(3, 4, 3), relu=nn.ReLU(), fc=nn.Linear(4, 2))).wiring is None
    flattened = infer(ConvHead(nn.Flatten()))
    assert flattened.wiring.kind == "sequential"
    assert flattened.wiring.inputs[0].shape == (2, 3, 8, 8)  # the side comes from fc's 256 inputs
    assert flattened.value("between") == "Flatten"


# ---------------------------------------------------------------- ranked leaf types (issue 10)


def test_an_embedding_tied_to_a_decoder_with_bias_is_the_embedding_whatever_its_name():
    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(30, 12)
            self.decoder = nn.Linear(12, 30)
            self.decoder.weight = self.encoder.weight

    spec = infer(LanguageModel())
    encoder, decoder = spec.module("encoder"), spec.module("decoder")
    assert (encoder.type, encoder.alternatives) == ("Embedding", ())
    assert "tied to decoder.weight" in encoder.evidence
    assert decoder.type == "Linear"


def test_two_bias_free_tied_weights_rank_the_first_as_embedding_and_say_so():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(30, 12)
            self.out = nn.Linear(12, 30, bias=False)
            self.out.weight = self.table.weight

    spec = infer(Tied())
    table, out = spec.module("table"), spec.module("out")
    assert (table.type, table.alternatives) == ("Embedding", ("Linear",)) and table.note
    assert (out.type, out.alternatives) == ("Linear", ("Embedding",)) and "tied" in out.note


def test_a_module_named_like_a_bias_holding_a_table_is_an_embedding():
    spec = infer_shapes({"attn.q.weight": (8, 8), "attn.relative_attention_bias.weight": (32, 2)})
    assert spec.module("attn.relative_attention_bias").type == "Embedding"


def test_a_3d_weight_away_from_convolutions_is_bilinear_with_conv1d_as_runner_up():
    spec = infer(Named(text=nn.Linear(6, 5), fuse=nn.Bilinear(5, 4, 3)))
    fuse = spec.module("fuse")
    assert fuse.type == "Bilinear" and fuse.alternatives == ("Conv1d",)
    assert dict(fuse.args) == {
        "in1_features": 5,
        "in2_features": 4,
        "out_features": 3,
        "bias": True,
    }
    # in a sequence (Bilinear takes two inputs) or beside convolutions it stays a Conv1d
    stacked = infer(nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3)))
    assert stacked.module("0").type == "Conv1d"


@NEEDS_PRELU
def test_prelu_is_chosen_on_evidence_and_layernorm_keeps_it_as_an_alternative():
    spec = infer(nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8), nn.Linear(8, 8), nn.PReLU()))
    assert spec.module("1").type == "PReLU" and "convolution" in spec.module("1").note
    assert spec.module("3").type == "PReLU" and dict(spec.module("3").args) == {"num_parameters": 1}
    norm = infer(Named(fc=nn.Linear(4, 8), norm=nn.LayerNorm(8, bias=False))).module("norm")
    assert norm.type == "LayerNorm" and "PReLU" in norm.alternatives


def test_running_statistics_without_affine_read_as_instance_norm():
    spec = infer(
        nn.Sequential(
            nn.Conv2d(3, 8, 3),
            nn.InstanceNorm2d(8, track_running_stats=True),
            nn.Conv2d(8, 8, 3),
            nn.BatchNorm2d(8),
        )
    )
    assert (
        spec.module("1").type == "InstanceNorm2d" and "BatchNorm2d" in spec.module("1").alternatives
    )
    assert (
        spec.module("3").type == "BatchNorm2d" and "InstanceNorm2d" in spec.module("3").alternatives
    )


# ---------------------------------------------------------------- new families (issue 10)


@pytest.mark.parametrize(
    ("wrap", "dim", "style"),
    [
        (lambda m: nn.utils.parametrizations.weight_norm(m, dim=2), 2, "parametrization"),
        (lambda m: nn.utils.parametrizations.weight_norm(m, dim=None), None, "parametrization"),
        (lambda m: nn.utils.weight_norm(m), 0, "hook"),
    ],
)
@pytest.mark.filterwarnings("ignore:torch.nn.utils.weight_norm is deprecated")
def test_weight_norm_in_both_forms_is_the_layer_it_wraps(wrap, dim, style):
    spec = infer(Named(conv=wrap(nn.Conv1d(4, 6, 5))))
    conv = spec.module("conv")
    assert conv.type == "Conv1d" and conv.args["out_channels"] == 6
    assert (conv.weight_norm.dim, conv.weight_norm.style) == (dim, style)
    assert spec.unexplained_keys == ()


def test_depthwise_groups_come_from_the_layer_before():
    spec = infer(
        nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.Conv2d(16, 16, 3, groups=16))
    )
    dw = spec.module("2")
    assert (dw.args["in_channels"], dw.args["groups"]) == (16, 16)
    assert all(not hp.name.endswith("groups") for hp in spec.free)


def test_groups_the_shapes_leave_open_are_a_free_value_with_candidates():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.squeeze = nn.Conv2d(8, 64, 1)
            self.grouped = nn.Conv2d(64, 64, 3, groups=32)  # stores (64, 2, 3, 3)

    spec = infer(Block())
    groups = spec.hyperparameter("grouped.groups")
    assert not groups.determined and groups.value == 32 and 1 in groups.candidates
    model = build_model(spec.with_values({"grouped.groups": 1}))  # every candidate loads
    model.load_state_dict(Block().state_dict())
    assert model.grouped.in_channels == 2 and model.grouped.groups == 1


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
def test_a_bare_transformer_decoder_is_the_root_and_rebuilds():
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32), 2, norm=nn.LayerNorm(16))
    spec = infer(decoder)
    assert spec.root.type == "TransformerDecoder"
    model = build_model(spec)
    assert isinstance(model, nn.TransformerDecoder)
    model.load_state_dict(decoder.state_dict(), strict=True)


# ---------------------------------------------------------------- choosing the runner-up


@pytest.mark.parametrize(
    ("model", "path", "choice"),
    [
        pytest.param(
            Named(fc=nn.Linear(4, 8), norm=nn.LayerNorm(8, bias=False)),
            "norm",
            "PReLU",
            marks=NEEDS_PRELU,
        ),
        (Named(fc=nn.Linear(4, 8), norm=nn.LayerNorm(8, bias=False)), "norm", "RMSNorm"),
        (Named(up=nn.Conv2d(4, 6, 3, bias=False)), "up", "ConvTranspose2d"),
        (Named(text=nn.Linear(6, 5), fuse=nn.Bilinear(5, 4, 3)), "fuse", "Conv1d"),
        (nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), "1", "InstanceNorm2d"),
        (Named(fc=nn.Linear(4, 8), table=nn.Linear(8, 30, bias=False)), "table", "Embedding"),
        (nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "", "Sequential"),
    ],
)
def test_the_runner_up_can_be_chosen_and_still_loads(model, path, choice):
    state = model.state_dict()
    checkpoint = Checkpoint.from_state_dict(state, module_paths=())
    spec = infer_spec(checkpoint)
    before = spec.module(path).type
    chosen = choose_type(spec, path, choice, checkpoint.shapes)
    module = chosen.module(path)
    assert module.type == choice and before in module.alternatives and module.note
    build_model(chosen).load_state_dict(state, strict=True)


def test_a_type_the_shapes_do_not_allow_is_refused_with_the_choices():
    checkpoint = Checkpoint.from_state_dict(Named(fc=nn.Linear(4, 8)).state_dict())
    spec = infer_spec(checkpoint)
    with pytest.raises(HyperparameterError, match="allow one type only"):
        choose_type(spec, "fc", "Embedding", checkpoint.shapes)


def test_a_norm_feeding_a_linear_over_its_features_is_a_layernorm_even_beside_a_conv():
    spec = infer(Named(dw=nn.Conv2d(8, 8, 7, groups=8), norm=nn.LayerNorm(8), fc=nn.Linear(8, 32)))
    norm = spec.module("norm")
    assert norm.type == "LayerNorm" and norm.alternatives == ("GroupNorm",)
    assert "Linear" in norm.note


def test_batchnorm_dims_follow_the_last_convolution_before_it_in_the_file():
    spec = infer(
        Named(stage=nn.Sequential(nn.Conv2d(3, 8, 3)), norm=nn.BatchNorm2d(8), head=nn.Linear(8, 2))
    )
    assert spec.module("norm").type == "BatchNorm2d"
    assert "last convolution before it" in spec.module("norm").note
