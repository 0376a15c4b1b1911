"""Real-world architectures, tiny and with random weights, for the round-trip zoo.

Hugging Face models come from `transformers` itself (a test-only extra: configs only,
nothing downloaded). timm and torchvision need a torchvision that matches our torch, so
their module layouts are replicated here faithfully: the same attribute names, nesting
and parameter/buffer registration as the libraries' own classes (names are what
recovery reads). The leaf cases of issue 10 sit at the end.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@dataclass(frozen=True)
class RealCase:
    name: str
    make: Callable[[], nn.Module]
    needs_transformers: bool = False

    def __repr__(self) -> str:
        return self.name


# ---------------------------------------------------------------- Hugging Face (transformers)


def _hf(model_cls: str, config_cls: str, **config) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config))
    return model.eval()


_TEXT = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=24,
)
_VISION = dict(
    image_size=16,
    patch_size=4,
    num_channels=3,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
)


def hf_bert() -> nn.Module:
    return _hf("BertModel", "BertConfig", **_TEXT)


def hf_roberta() -> nn.Module:
    return _hf("RobertaForMaskedLM", "RobertaConfig", **_TEXT, pad_token_id=1)


def hf_gpt2() -> nn.Module:
    return _hf(
        "GPT2Model",
        "GPT2Config",
        vocab_size=40,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=24,
        bos_token_id=0,
        eos_token_id=0,
    )


def hf_t5() -> nn.Module:
    return _hf(
        "T5Model",
        "T5Config",
        vocab_size=40,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
    )


def hf_bart() -> nn.Module:
    return _hf(
        "BartForConditionalGeneration",
        "BartConfig",
        vocab_size=40,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=24,
    )


def hf_clip() -> nn.Module:
    import transformers

    text = dict(_TEXT, projection_dim=8)
    vision = dict(_VISION, projection_dim=8)
    torch.manual_seed(0)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
    return transformers.CLIPModel(config).eval()


def hf_wav2vec2() -> nn.Module:
    return _hf(
        "Wav2Vec2Model",
        "Wav2Vec2Config",
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(2, 2),
        conv_kernel=(3, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=16,  # the grouped, weight-normed positional conv
        feat_extract_norm="layer",
    )


def hf_vit() -> nn.Module:
    return _hf("ViTModel", "ViTConfig", **_VISION)


def hf_deit() -> nn.Module:
    return _hf("DeiTForImageClassificationWithTeacher", "DeiTConfig", **_VISION, num_labels=3)


def hf_swin() -> nn.Module:
    return _hf(
        "SwinModel",
        "SwinConfig",
        image_size=16,
        patch_size=2,
        embed_dim=8,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=2,
    )


def hf_convnext() -> nn.Module:
    return _hf(
        "ConvNextForImageClassification",
        "ConvNextConfig",
        num_channels=3,
        num_stages=2,
        hidden_sizes=[8, 16],
        depths=[1, 2],
        num_labels=3,
    )


# ---------------------------------------------------------------- torchvision layouts


class _TvEncoderBlock(nn.Module):
    """torchvision.models.vision_transformer.EncoderBlock."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(  # MLPBlock: Linear, GELU, Dropout, Linear, Dropout
            nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, dim), nn.Dropout(0.0)
        )


def tv_vit() -> nn.Module:
    """torchvision.models.VisionTransformer: class_token on the root, pos_embedding on the encoder."""
    dim, patches = 16, 4

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embedding = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.02)
            self.dropout = nn.Dropout(0.0)
            self.layers = nn.Sequential()
            for i in range(2):
                self.layers.add_module(f"encoder_layer_{i}", _TvEncoderBlock(dim, 2, 32))
            self.ln = nn.LayerNorm(dim, eps=1e-6)

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_proj = nn.Conv2d(3, dim, kernel_size=8, stride=8)
            self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.encoder = Encoder()
            self.heads = nn.Sequential()
            self.heads.add_module("head", nn.Linear(dim, 5))

    return VisionTransformer()


class _Permute(nn.Module):
    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = dims


class _LayerNorm2d(nn.LayerNorm):
    """torchvision.models.convnext.LayerNorm2d."""


class _CNBlock(nn.Module):
    """torchvision.models.convnext.CNBlock: layer_scale is (C, 1, 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            _Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            _Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)
        self.stochastic_depth = nn.Identity()


def tv_convnext() -> nn.Module:
    class ConvNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Sequential(nn.Conv2d(3, 8, kernel_size=4, stride=4), _LayerNorm2d(8, eps=1e-6)),
                nn.Sequential(_CNBlock(8)),
                nn.Sequential(_LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, kernel_size=2, stride=2)),
                nn.Sequential(_CNBlock(16)),
            )
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(
                _LayerNorm2d(16, eps=1e-6), nn.Flatten(1), nn.Linear(16, 4)
            )

    return ConvNeXt()


def tv_mobilenet_v2() -> nn.Module:
    """torchvision.models.MobileNetV2's InvertedResidual: depthwise 3×3 between 1×1 convs."""

    def conv_bn(i: int, o: int, k: int, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(i, o, k, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(o),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, oup: int, expand: int):
            super().__init__()
            hidden = inp * expand
            self.conv = nn.Sequential(
                conv_bn(inp, hidden, 1),
                conv_bn(hidden, hidden, 3, groups=hidden),
                nn.Conv2d(hidden, oup, 1, bias=False),
                nn.BatchNorm2d(oup),
            )

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                conv_bn(3, 8, 3), InvertedResidual(8, 8, 2), InvertedResidual(8, 12, 2)
            )
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(12, 5))

    return MobileNetV2()


def tv_resnext() -> nn.Module:
    """torchvision.models.resnet.Bottleneck with groups=32 (ResNeXt) and a downsample."""

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, width: int, out: int):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=32, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out)
            )

    class ResNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = nn.Sequential(Bottleneck(16, 64, 64))
            self.fc = nn.Linear(64, 3)

    return ResNeXt()


# ---------------------------------------------------------------- timm layouts


class _LayerScale(nn.Module):
    """timm.layers.LayerScale: a module holding only `gamma`."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(1e-5 * torch.ones(dim))


class _TimmMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(0.0)


def timm_vit_layer_scale() -> nn.Module:
    """timm.models.vision_transformer.VisionTransformer with init_values (ls1/ls2)."""
    dim = 16

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(dim, dim * 3)
            self.q_norm = nn.Identity()
            self.k_norm = nn.Identity()
            self.attn_drop = nn.Dropout(0.0)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(0.0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention()
            self.ls1 = _LayerScale(dim)
            self.drop_path1 = nn.Identity()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = _TimmMlp(dim, 4 * dim)
            self.ls2 = _LayerScale(dim)
            self.drop_path2 = nn.Identity()

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, dim, kernel_size=4, stride=4)
            self.norm = nn.Identity()

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
            self.patch_embed = PatchEmbed()
            self.pos_drop = nn.Dropout(0.0)
            self.blocks = nn.Sequential(Block(), Block())
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.head = nn.Linear(dim, 5)

    return VisionTransformer()


def timm_convnext() -> nn.Module:
    """timm.models.convnext.ConvNeXtBlock: conv_dw, norm, mlp, gamma (C,)."""

    class ConvNeXtBlock(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = _TimmMlp(dim, 4 * dim)
            self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
            self.drop_path = nn.Identity()

    class Stage(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.downsample = nn.Identity()
            self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))

    class ConvNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, kernel_size=4, stride=4), nn.LayerNorm(8))
            self.stages = nn.Sequential(Stage(8))
            self.head = nn.Module()
            self.head.norm = nn.LayerNorm(8)
            self.head.fc = nn.Linear(8, 3)

    return ConvNeXt()


def timm_swin() -> nn.Module:
    """timm.models.swin_transformer.WindowAttention: a bias table and its integer index."""
    dim, window, heads = 8, 2, 2

    class WindowAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.relative_position_bias_table = nn.Parameter(
                torch.randn((2 * window - 1) ** 2, heads) * 0.02
            )
            coords = torch.stack(
                torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
            ).flatten(1)
            relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
            index = relative[..., 0] * (2 * window - 1) + relative[..., 1]
            self.register_buffer("relative_position_index", index, persistent=True)
            self.qkv = nn.Linear(dim, dim * 3)
            self.attn_drop = nn.Dropout(0.0)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(0.0)
            self.softmax = nn.Softmax(dim=-1)

    class SwinBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention()
            self.drop_path1 = nn.Identity()
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = _TimmMlp(dim, 4 * dim)
            self.drop_path2 = nn.Identity()

    class Swin(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv2d(3, dim, 4, 4)
            self.patch_embed.norm = nn.LayerNorm(dim)
            self.layers = nn.Sequential(nn.Module())
            self.layers[0].blocks = nn.Sequential(SwinBlock(), SwinBlock())
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Module()
            self.head.fc = nn.Linear(dim, 3)

    return Swin()


def efficientformer_like() -> nn.Module:
    """timm.models.efficientformer: Meta4D blocks (pooling mixer, ConvMlp with BatchNorm)
    whose layer scales are LayerScale2d modules (`ls1.gamma`, shape (C,))."""

    class ConvMlp(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.fc1 = nn.Conv2d(dim, 4 * dim, 1)
            self.norm1 = nn.BatchNorm2d(4 * dim)
            self.act = nn.GELU()
            self.fc2 = nn.Conv2d(4 * dim, dim, 1)
            self.norm2 = nn.BatchNorm2d(dim)
            self.drop = nn.Dropout(0.0)

    class MetaBlock2d(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.token_mixer = nn.AvgPool2d(3, 1, 1)
            self.ls1 = _LayerScale(dim)
            self.mlp = ConvMlp(dim)
            self.ls2 = _LayerScale(dim)

    class EfficientFormer(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
                nn.BatchNorm2d(8), nn.ReLU(),
            )  # fmt: skip
            self.stages = nn.Sequential(nn.Module())
            self.stages[0].blocks = nn.Sequential(MetaBlock2d(8), MetaBlock2d(8))
            self.norm = nn.BatchNorm2d(8)
            self.head = nn.Linear(8, 3)

    return EfficientFormer()


# ---------------------------------------------------------------- PyTorch examples and leaves


def word_language_model() -> nn.Module:
    """pytorch/examples word_language_model RNNModel with tie_weights: an Embedding named
    `encoder` shares its storage with the Linear `decoder`."""

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.2)
            self.encoder = nn.Embedding(30, 12)
            self.rnn = nn.LSTM(12, 12, 2)
            self.decoder = nn.Linear(12, 30)
            self.decoder.weight = self.encoder.weight

    return RNNModel()


def bare_transformer_decoder() -> nn.Module:
    layer = nn.TransformerDecoderLayer(16, 2, 32, batch_first=True)
    return nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(16))


def bilinear_fusion() -> nn.Module:
    class Fusion(nn.Module):
        def __init__(self):
            super().__init__()
            self.text = nn.Linear(6, 5)
            self.image = nn.Linear(7, 4)
            self.fuse = nn.Bilinear(5, 4, 3)

    return Fusion()


def prelu_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.PReLU(8),
        nn.Conv2d(8, 8, 3),
        nn.PReLU(),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def instance_norm_stats() -> nn.Module:
    """Style-transfer style: InstanceNorm tracking running statistics, affine or not."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.InstanceNorm2d(8, affine=False, track_running_stats=True),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
    )


def old_weight_norm() -> nn.Module:
    """`nn.utils.weight_norm` (weight_g / weight_v) as WaveNet-style vocoders still store it."""
    return nn.Sequential(
        nn.utils.weight_norm(nn.Conv1d(4, 8, 3)),
        nn.LeakyReLU(0.1),
        nn.utils.weight_norm(nn.Conv1d(8, 8, 3, dilation=2), dim=None),
    )


def t5_relative_bias() -> nn.Module:
    """T5's bucketed relative-position bias alone: an Embedding(buckets, heads)."""

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(8, 8, bias=False)
            self.relative_attention_bias = nn.Embedding(32, 2)

    return Attention()


REAL_WORLD: tuple[RealCase, ...] = (
    RealCase("hf_bert", hf_bert, True),
    RealCase("hf_roberta", hf_roberta, True),
    RealCase("hf_gpt2_conv1d", hf_gpt2, True),
    RealCase("hf_t5", hf_t5, True),
    RealCase("hf_bart", hf_bart, True),
    RealCase("hf_clip", hf_clip, True),
    RealCase("hf_wav2vec2_weight_norm", hf_wav2vec2, True),
    RealCase("hf_vit", hf_vit, True),
    RealCase("hf_deit", hf_deit, True),
    RealCase("hf_swin", hf_swin, True),
    RealCase("hf_convnext", hf_convnext, True),
    RealCase("torchvision_vit", tv_vit),
    RealCase("torchvision_convnext", tv_convnext),
    RealCase("torchvision_mobilenet_v2", tv_mobilenet_v2),
    RealCase("torchvision_resnext", tv_resnext),
    RealCase("timm_vit_layer_scale", timm_vit_layer_scale),
    RealCase("timm_convnext", timm_convnext),
    RealCase("timm_swin", timm_swin),
    RealCase("efficientformer_like", efficientformer_like),
    RealCase("word_language_model_tied", word_language_model),
    RealCase("bare_transformer_decoder", bare_transformer_decoder),
    RealCase("bilinear_fusion", bilinear_fusion),
    RealCase("prelu_cnn", prelu_cnn),
    RealCase("instance_norm_running_stats", instance_norm_stats),
    RealCase("old_style_weight_norm", old_weight_norm),
    RealCase("t5_relative_attention_bias", t5_relative_bias),
)
