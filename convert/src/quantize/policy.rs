//! Which type each tensor gets: a port of llama.cpp's `tensor_allows_quantization`,
//! `llama_tensor_get_type` and `tensor_type_fallback` (src/llama-quant.cpp) for dense models,
//! so a mix like Q4_K_M picks the same per-tensor types as `llama-quantize` without an
//! importance matrix.

use nexus_kernels::GgmlType;

/// A target file type; `ftype()` is llama.cpp's `llama_ftype` number (`general.file_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

use QuantType as Q;

impl QuantType {
    pub const ALL: [QuantType; 17] = [
        Q::F32,
        Q::F16,
        Q::BF16,
        Q::Q4_0,
        Q::Q4_1,
        Q::Q5_0,
        Q::Q5_1,
        Q::Q8_0,
        Q::Q2_K,
        Q::Q3_K_S,
        Q::Q3_K_M,
        Q::Q3_K_L,
        Q::Q4_K_S,
        Q::Q4_K_M,
        Q::Q5_K_S,
        Q::Q5_K_M,
        Q::Q6_K,
    ];

    /// The name llama-quantize accepts, lower-cased (`q4_k_m`).
    pub fn name(self) -> &'static str {
        match self {
            Q::F32 => "f32",
            Q::F16 => "f16",
            Q::BF16 => "bf16",
            Q::Q4_0 => "q4_0",
            Q::Q4_1 => "q4_1",
            Q::Q5_0 => "q5_0",
            Q::Q5_1 => "q5_1",
            Q::Q8_0 => "q8_0",
            Q::Q2_K => "q2_k",
            Q::Q3_K_S => "q3_k_s",
            Q::Q3_K_M => "q3_k_m",
            Q::Q3_K_L => "q3_k_l",
            Q::Q4_K_S => "q4_k_s",
            Q::Q4_K_M => "q4_k_m",
            Q::Q5_K_S => "q5_k_s",
            Q::Q5_K_M => "q5_k_m",
            Q::Q6_K => "q6_k",
        }
    }

    /// Case-insensitive parse of `name()`; also accepts the `_M` mixes' short names
    /// (`q3_k`, `q4_k`, `q5_k`) as llama-quantize does.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        match s.as_str() {
            "q3_k" => return Some(Q::Q3_K_M),
            "q4_k" => return Some(Q::Q4_K_M),
            "q5_k" => return Some(Q::Q5_K_M),
            _ => {}
        }
        Self::ALL.iter().copied().find(|t| t.name() == s)
    }

    /// llama.cpp's `llama_ftype` number, written as `general.file_type`.
    pub fn ftype(self) -> u32 {
        match self {
            Q::F32 => 0,
            Q::F16 => 1,
            Q::Q4_0 => 2,
            Q::Q4_1 => 3,
            Q::Q8_0 => 7,
            Q::Q5_0 => 8,
            Q::Q5_1 => 9,
            Q::Q2_K => 10,
            Q::Q3_K_S => 11,
            Q::Q3_K_M => 12,
            Q::Q3_K_L => 13,
            Q::Q4_K_S => 14,
            Q::Q4_K_M => 15,
            Q::Q5_K_S => 16,
            Q::Q5_K_M => 17,
            Q::Q6_K => 18,
            Q::BF16 => 32,
        }
    }

    /// `llama_ftype_get_default_type`: the type of tensors no rule singles out.
    pub fn default_type(self) -> GgmlType {
        match self {
            Q::F32 => GgmlType::F32,
            Q::F16 => GgmlType::F16,
            Q::BF16 => GgmlType::BF16,
            Q::Q4_0 => GgmlType::Q4_0,
            Q::Q4_1 => GgmlType::Q4_1,
            Q::Q5_0 => GgmlType::Q5_0,
            Q::Q5_1 => GgmlType::Q5_1,
            Q::Q8_0 => GgmlType::Q8_0,
            Q::Q2_K => GgmlType::Q2_K,
            Q::Q3_K_S | Q::Q3_K_M | Q::Q3_K_L => GgmlType::Q3_K,
            Q::Q4_K_S | Q::Q4_K_M => GgmlType::Q4_K,
            Q::Q5_K_S | Q::Q5_K_M => GgmlType::Q5_K,
            Q::Q6_K => GgmlType::Q6_K,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

/// llama.cpp's `tensor_get_category`: substring tests in this exact order.
fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    let table = [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    table
        .iter()
        .find(|(s, _)| name.contains(s))
        .map_or(Other, |(_, c)| *c)
}

/// Substrings that keep a 2-D `*weight` tensor in its input type (llama.cpp's generic list).
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
];

/// Number of dimensions ignoring trailing 1s (ggml's `ggml_n_dims`).
pub(crate) fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization`: only 2-D+ `*weight` tensors outside the exclusion list.
pub(crate) fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    n_dims(dims) >= 2
        && name.ends_with("weight")
        && !NEVER_QUANTIZED.iter().any(|s| name.contains(s))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The layer index of `blk.N.…` names, -1 otherwise (like the loader's `sscanf`).
pub(crate) fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .map(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<i64>().unwrap_or(-1)
        })
        .unwrap_or(-1)
}

/// Model facts the rules look at, and the running layer counters llama.cpp keeps while it
/// walks tensors in its (layer, name) order.
pub struct Policy {
    pub qtype: QuantType,
    falcon: bool,
    is_70b: bool,
    n_gqa: u64,
    tied_embeddings: bool,
    n_attention_wv: i64,
    n_layer: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    /// Tensors whose row length forced a fallback type, for the summary line.
    pub n_fallback: usize,
}

fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

impl Policy {
    /// `names` in processing order; `n_layer` is `<arch>.block_count`.
    pub fn new(
        qtype: QuantType,
        arch: &str,
        n_layer: u64,
        n_head: u64,
        n_head_kv: u64,
        names: &[&str],
    ) -> Self {
        let cats: Vec<Category> = names.iter().map(|n| category(n)).collect();
        let is_attn_v =
            |c: &Category| matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB);
        Policy {
            qtype,
            falcon: arch == "falcon",
            // llama.cpp's LLM_TYPE_70B for the two dense families we port: 80 layers.
            is_70b: matches!(arch, "llama" | "qwen2") && n_layer == 80,
            n_gqa: n_head.checked_div(n_head_kv).unwrap_or(0),
            tied_embeddings: !cats.contains(&Category::Output),
            n_attention_wv: cats.iter().filter(|c| is_attn_v(c)).count() as i64,
            n_layer: n_layer as i64,
            i_attention_wv: 0,
            i_ffn_down: 0,
            n_fallback: 0,
        }
    }

    /// The output type of one tensor; call once per tensor in processing order.
    pub fn tensor_type(&mut self, name: &str, dims: &[u64], input: GgmlType) -> GgmlType {
        if !allows_quantization(name, dims) {
            return input;
        }
        let default = self.qtype.default_type();
        if !default.is_quantized() {
            return default;
        }
        let ty = self.mix_rule(default, name, dims[0]);
        self.fallback(ty, dims[0])
    }

    /// `llama_tensor_get_type_impl`, restricted to the file types we offer.
    fn mix_rule(&mut self, mut ty: GgmlType, name: &str, ncols: u64) -> GgmlType {
        use Category as C;
        use GgmlType as G;
        let f = self.qtype;
        let cat = category(name);
        if cat == C::Output || (self.tied_embeddings && cat == C::TokenEmbd) {
            if self.falcon || !ncols.is_multiple_of(ty.block_size() as u64) {
                ty = G::Q8_0;
            } else if ty != G::Q8_0 {
                ty = G::Q6_K;
            }
        } else if cat == C::TokenEmbd {
            // No rule for the types we offer.
        } else if matches!(cat, C::AttnV | C::AttnQkv | C::AttnKvB) {
            let i = self.i_attention_wv;
            if f == Q::Q2_K {
                ty = if self.n_gqa >= 4 { G::Q4_K } else { G::Q3_K };
            } else if f == Q::Q3_K_M {
                ty = if i < 2 { G::Q5_K } else { G::Q4_K };
            } else if f == Q::Q3_K_L {
                ty = G::Q5_K;
            } else if matches!(f, Q::Q4_K_M | Q::Q5_K_M) && use_more_bits(i, self.n_attention_wv) {
                ty = G::Q6_K;
            } else if f == Q::Q4_K_S && i < 4 {
                ty = G::Q5_K;
            }
            if self.is_70b && matches!(ty, G::Q3_K | G::Q4_K) {
                ty = G::Q5_K;
            }
            self.i_attention_wv += 1;
        } else if cat == C::FfnDown {
            let (i, n) = (self.i_ffn_down, self.n_layer);
            match f {
                Q::Q2_K => ty = G::Q3_K,
                Q::Q3_K_M => {
                    ty = if i < n / 16 {
                        G::Q5_K
                    } else if !self.falcon || use_more_bits(i, n) {
                        G::Q4_K
                    } else {
                        G::Q3_K
                    }
                }
                Q::Q3_K_L => ty = if self.falcon { G::Q4_K } else { G::Q5_K },
                Q::Q4_K_M if self.falcon => {
                    ty = if i < n / 16 {
                        G::Q6_K
                    } else if use_more_bits(i, n) {
                        G::Q5_K
                    } else {
                        G::Q4_K
                    }
                }
                Q::Q4_K_M | Q::Q5_K_M if use_more_bits(i, n) => ty = G::Q6_K,
                Q::Q4_K_S if !self.falcon && i < n / 8 => ty = G::Q5_K,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == C::AttnOutput {
            match (self.falcon, f) {
                (false, Q::Q2_K) => ty = G::Q3_K,
                (false, Q::Q3_K_M) => ty = G::Q4_K,
                (false, Q::Q3_K_L) => ty = G::Q5_K,
                (true, Q::Q3_K_L) => ty = G::Q4_K,
                _ => {}
            }
        }
        ty
    }

    /// `tensor_type_fallback`: a row length that is not a whole number of blocks demotes a
    /// 256-block type to a 32-block one, and anything still misfit to F16.
    fn fallback(&mut self, ty: GgmlType, ncols: u64) -> GgmlType {
        use GgmlType as G;
        if ncols.is_multiple_of(ty.block_size() as u64) {
            return ty;
        }
        self.n_fallback += 1;
        let to = match ty {
            G::Q2_K | G::Q3_K => G::Q4_0,
            G::Q4_K => G::Q5_0,
            G::Q5_K => G::Q5_1,
            G::Q6_K => G::Q8_0,
            other => other,
        };
        if !ncols.is_multiple_of(to.block_size() as u64) {
            G::F16
        } else {
            to
        }
    }
}
