//! VITS hyper-parameters, read from tensor shapes and Conv/ConvTranspose attributes, then
//! checked: every conv's attributes must agree with its weight and with the padding the native
//! forward applies, and the parameter set must be exactly the one these hyper-parameters imply
//! (same names, same shapes), so a voice of another layout is refused instead of misread.

use std::collections::BTreeMap;
use std::path::Path;

use crate::onnx::{Graph, Node};

use super::VoiceError;

/// Fixed by the architecture the native forward implements (Piper's VITS, ResBlock2 decoder).
const FFN_KERNEL: usize = 3;
const DP_KERNEL: usize = 3;
const DP_DDS_LAYERS: usize = 3;
const DP_CONV_FLOWS: [usize; 3] = [3, 5, 7];
const PRE_POST_KERNEL: usize = 7;
const RESBLOCK_CONVS: usize = 2;

#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    pub n_vocab: usize,
    pub hidden_channels: usize,
    pub filter_channels: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub window_size: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub upsample_initial_channel: usize,
    pub resblock_kernel_sizes: Vec<usize>,
    /// Per resblock kind, the dilation of each of its convs.
    pub resblock_dilations: Vec<Vec<usize>>,
    pub n_flows: usize,
    pub n_wn_layers: usize,
    pub flow_kernel_size: usize,
    pub n_bins: usize,
}

struct Ctx<'s, 'g, 'a> {
    path: &'s Path,
    shapes: &'s BTreeMap<String, Vec<usize>>,
    graph: &'g Graph<'a>,
}

impl Ctx<'_, '_, '_> {
    fn arch(&self, problem: String) -> VoiceError {
        VoiceError::Architecture { path: self.path.into(), problem }
    }

    fn shape(&self, name: &str) -> Result<&[usize], VoiceError> {
        self.shapes.get(name).map(Vec::as_slice).ok_or_else(|| VoiceError::Missing { path: self.path.into(), name: name.into() })
    }

    fn dim(&self, name: &str, axis: usize, rank: usize) -> Result<usize, VoiceError> {
        let s = self.shape(name)?;
        if s.len() != rank {
            return Err(self.arch(format!("tensor {name:?} has shape {s:?}, expected rank {rank}")));
        }
        Ok(s[axis])
    }

    /// How many `prefix{i}suffix` tensors exist for i = 0, 1, 2, … (stops at the first gap).
    fn count(&self, prefix: &str, suffix: &str) -> usize {
        (0..).take_while(|i| self.shapes.contains_key(&format!("{prefix}{i}{suffix}"))).count()
    }

    fn node(&self, name: &str) -> Result<&Node<'_>, VoiceError> {
        self.graph.node.iter().find(|n| n.name == name).ok_or_else(|| self.arch(format!("graph has no node {name:?}")))
    }

    /// A 1-D conv's (kernel, stride, dilation, pad) attributes, with symmetric pads and group 1
    /// unless `group` says otherwise.
    fn conv(&self, name: &str, group: usize) -> Result<ConvAttrs, VoiceError> {
        let n = self.node(name)?;
        let one = |key: &str, default: i64| -> Result<usize, VoiceError> {
            let v = n.attr_ints(key).unwrap_or_else(|| vec![default]);
            match v.as_slice() {
                [x] if *x >= 0 => Ok(*x as usize),
                _ => Err(self.arch(format!("node {name:?}: attribute {key} = {v:?}, expected one value"))),
            }
        };
        let pads = n.attr_ints("pads").unwrap_or_else(|| vec![0, 0]);
        let [lo, hi] = pads.as_slice() else {
            return Err(self.arch(format!("node {name:?}: pads {pads:?}, expected 2 values")));
        };
        if lo != hi || *lo < 0 {
            return Err(self.arch(format!("node {name:?}: asymmetric pads {pads:?}")));
        }
        let g = one("group", 1)?;
        if g != group {
            return Err(self.arch(format!("node {name:?}: group {g}, expected {group}")));
        }
        Ok(ConvAttrs { kernel: one("kernel_shape", 0)?, stride: one("strides", 1)?, dilation: one("dilations", 1)?, pad: *lo as usize })
    }

    /// A stride-1 conv whose padding keeps the length ("same" padding), as the forward assumes.
    fn same_conv(&self, name: &str, weight: &str, group: usize) -> Result<ConvAttrs, VoiceError> {
        let a = self.conv(name, group)?;
        let k = self.dim(weight, 2, 3)?;
        if a.kernel != k || a.stride != 1 || 2 * a.pad != a.dilation * (k - 1) {
            return Err(self.arch(format!(
                "node {name:?}: kernel {} stride {} dilation {} pad {} do not make a length-preserving conv of kernel {k}",
                a.kernel, a.stride, a.dilation, a.pad
            )));
        }
        Ok(a)
    }
}

struct ConvAttrs {
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
}

/// Reads the hyper-parameters from `shapes` (VITS name → ONNX shape) and the graph's nodes.
pub fn read(graph: &Graph, shapes: &BTreeMap<String, Vec<usize>>, path: &Path) -> Result<HParams, VoiceError> {
    let c = Ctx { path, shapes, graph };
    let n_vocab = c.dim("enc_p.emb.weight", 0, 2)?;
    let hidden = c.dim("enc_p.emb.weight", 1, 2)?;
    let n_layers = c.count("enc_p.encoder.attn_layers.", ".conv_q.weight");
    let rel = c.shape("enc_p.encoder.attn_layers.0.emb_rel_k")?;
    let (window_size, head_dim) = match rel {
        [1, w, d] if w % 2 == 1 && *d > 0 && hidden % d == 0 => ((w - 1) / 2, *d),
        _ => return Err(c.arch(format!("emb_rel_k has shape {rel:?}, expected [1, 2·window+1, hidden/heads]"))),
    };
    let filter_channels = c.dim("enc_p.encoder.ffn_layers.0.conv_1.weight", 0, 3)?;

    // Decoder: ConvTranspose upsampling stages, then resblocks (n_kinds per stage).
    let n_ups = c.count("dec.ups.", ".weight");
    let mut upsample_rates = Vec::new();
    let mut upsample_kernel_sizes = Vec::new();
    for i in 0..n_ups {
        let a = c.conv(&format!("/dec/ups.{i}/ConvTranspose"), 1)?;
        let k = c.dim(&format!("dec.ups.{i}.weight"), 2, 3)?;
        // out length = stride · in: needs k − 2·pad = stride (no output_padding).
        if a.kernel != k || a.dilation != 1 || k < a.stride || k - a.stride != 2 * a.pad {
            return Err(c.arch(format!("dec.ups.{i}: kernel {k} stride {} pad {} is not an exact ×stride upsampling", a.stride, a.pad)));
        }
        upsample_rates.push(a.stride);
        upsample_kernel_sizes.push(k);
    }
    let upsample_initial_channel = c.dim("dec.conv_pre.weight", 0, 3)?;
    c.same_conv("/dec/conv_pre/Conv", "dec.conv_pre.weight", 1)?;
    c.same_conv("/dec/conv_post/Conv", "dec.conv_post.weight", 1)?;
    let n_resblocks = c.count("dec.resblocks.", ".convs.0.weight");
    if n_ups == 0 || n_resblocks == 0 || !n_resblocks.is_multiple_of(n_ups) {
        return Err(c.arch(format!("{n_resblocks} decoder resblocks for {n_ups} upsampling stages")));
    }
    let n_kinds = n_resblocks / n_ups;
    let mut resblock_kernel_sizes = Vec::new();
    let mut resblock_dilations = Vec::new();
    for r in 0..n_resblocks {
        let (kind, mut dil) = (r % n_kinds, Vec::new());
        for j in 0..RESBLOCK_CONVS {
            let w = format!("dec.resblocks.{r}.convs.{j}.weight");
            dil.push(c.same_conv(&format!("/dec/resblocks.{r}/convs.{j}/Conv"), &w, 1)?.dilation);
        }
        let k = c.dim(&format!("dec.resblocks.{r}.convs.0.weight"), 2, 3)?;
        if r < n_kinds {
            resblock_kernel_sizes.push(k);
            resblock_dilations.push(dil);
        } else if resblock_kernel_sizes[kind] != k || resblock_dilations[kind] != dil {
            return Err(c.arch(format!("dec.resblocks.{r}: kernel {k} dilations {dil:?} differ from resblock {kind}'s")));
        }
    }

    // Flow: mean-only coupling layers at even indices (odd ones are parameter-free Flips).
    let n_flows = (0..).take_while(|i| shapes.contains_key(&format!("flow.flows.{}.pre.weight", 2 * i))).count();
    let n_wn_layers = c.count("flow.flows.0.enc.in_layers.", ".weight");
    let flow_kernel_size = c.dim("flow.flows.0.enc.in_layers.0.weight", 2, 3)?;
    for f in 0..n_flows {
        for l in 0..n_wn_layers {
            let w = format!("flow.flows.{}.enc.in_layers.{l}.weight", 2 * f);
            let a = c.same_conv(&format!("/flow/flows.{}/enc/in_layers.{l}/Conv", 2 * f), &w, 1)?;
            if a.dilation != 1 {
                return Err(c.arch(format!("{w}: dilation {}, the native flow uses 1", a.dilation)));
            }
        }
    }

    // Duration predictor: DDSConv dilations 3^i, depthwise.
    for i in 0..DP_DDS_LAYERS {
        let a = c.same_conv(&format!("/dp/convs/convs_sep.{i}/Conv"), &format!("dp.convs.convs_sep.{i}.weight"), hidden)?;
        if a.dilation != DP_KERNEL.pow(i as u32) {
            return Err(c.arch(format!("dp.convs.convs_sep.{i}: dilation {}, expected {}", a.dilation, DP_KERNEL.pow(i as u32))));
        }
    }
    let proj = c.dim("dp.flows.3.proj.weight", 0, 3)?;
    if proj % 3 != 2 {
        return Err(c.arch(format!("dp.flows.3.proj has {proj} outputs, expected 3·bins − 1")));
    }

    Ok(HParams {
        n_vocab,
        hidden_channels: hidden,
        filter_channels,
        n_heads: hidden / head_dim,
        n_layers,
        window_size,
        upsample_rates,
        upsample_kernel_sizes,
        upsample_initial_channel,
        resblock_kernel_sizes,
        resblock_dilations,
        n_flows,
        n_wn_layers,
        flow_kernel_size,
        n_bins: (proj + 1) / 3,
    })
}

/// Every tensor the native forward reads, with its ONNX shape, for these hyper-parameters.
pub fn expected_tensors(hp: &HParams) -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: &[usize]| t.push((name, shape.to_vec()));
    let (h, f) = (hp.hidden_channels, hp.filter_channels);
    let conv = |add: &mut dyn FnMut(String, &[usize]), p: &str, out: usize, inp: usize, k: usize, bias: bool| {
        add(format!("{p}.weight"), &[out, inp, k]);
        if bias {
            add(format!("{p}.bias"), &[out]);
        }
    };
    let norm = |add: &mut dyn FnMut(String, &[usize]), p: &str| {
        add(format!("{p}.gamma"), &[h]);
        add(format!("{p}.beta"), &[h]);
    };

    add("enc_p.emb.weight".into(), &[hp.n_vocab, h]);
    for l in 0..hp.n_layers {
        let a = format!("enc_p.encoder.attn_layers.{l}");
        for m in ["conv_q", "conv_k", "conv_v", "conv_o"] {
            conv(&mut add, &format!("{a}.{m}"), h, h, 1, true);
        }
        add(format!("{a}.emb_rel_k"), &[1, 2 * hp.window_size + 1, h / hp.n_heads]);
        add(format!("{a}.emb_rel_v"), &[1, 2 * hp.window_size + 1, h / hp.n_heads]);
        norm(&mut add, &format!("enc_p.encoder.norm_layers_1.{l}"));
        conv(&mut add, &format!("enc_p.encoder.ffn_layers.{l}.conv_1"), f, h, FFN_KERNEL, true);
        conv(&mut add, &format!("enc_p.encoder.ffn_layers.{l}.conv_2"), h, f, FFN_KERNEL, true);
        norm(&mut add, &format!("enc_p.encoder.norm_layers_2.{l}"));
    }
    conv(&mut add, "enc_p.proj", 2 * h, h, 1, true);

    let dds = |add: &mut dyn FnMut(String, &[usize]), p: &str| {
        for i in 0..DP_DDS_LAYERS {
            conv(add, &format!("{p}.convs_sep.{i}"), h, 1, DP_KERNEL, true);
            conv(add, &format!("{p}.convs_1x1.{i}"), h, h, 1, true);
            norm(add, &format!("{p}.norms_1.{i}"));
            norm(add, &format!("{p}.norms_2.{i}"));
        }
    };
    conv(&mut add, "dp.pre", h, h, 1, true);
    dds(&mut add, "dp.convs");
    conv(&mut add, "dp.proj", h, h, 1, true);
    add("dp.flows.0.m".into(), &[2, 1]);
    add("dp.flows.0.exp_neg_logs".into(), &[2, 1]);
    for i in DP_CONV_FLOWS {
        conv(&mut add, &format!("dp.flows.{i}.pre"), h, 1, 1, true);
        dds(&mut add, &format!("dp.flows.{i}.convs"));
        conv(&mut add, &format!("dp.flows.{i}.proj"), 3 * hp.n_bins - 1, h, 1, true);
    }

    let half = h / 2;
    for fl in 0..hp.n_flows {
        let p = format!("flow.flows.{}", 2 * fl);
        conv(&mut add, &format!("{p}.pre"), h, half, 1, true);
        for l in 0..hp.n_wn_layers {
            conv(&mut add, &format!("{p}.enc.in_layers.{l}"), 2 * h, h, hp.flow_kernel_size, true);
            let res = if l + 1 < hp.n_wn_layers { 2 * h } else { h };
            conv(&mut add, &format!("{p}.enc.res_skip_layers.{l}"), res, h, 1, true);
        }
        conv(&mut add, &format!("{p}.post"), half, h, 1, true);
    }

    let c0 = hp.upsample_initial_channel;
    conv(&mut add, "dec.conv_pre", c0, h, PRE_POST_KERNEL, true);
    let n_kinds = hp.resblock_kernel_sizes.len();
    for (i, &k) in hp.upsample_kernel_sizes.iter().enumerate() {
        let (cin, cout) = (c0 >> i, c0 >> (i + 1));
        // ConvTranspose weights are [c_in, c_out, k].
        add(format!("dec.ups.{i}.weight"), &[cin, cout, k]);
        add(format!("dec.ups.{i}.bias"), &[cout]);
        for (kind, &rk) in hp.resblock_kernel_sizes.iter().enumerate() {
            for j in 0..RESBLOCK_CONVS {
                conv(&mut add, &format!("dec.resblocks.{}.convs.{j}", i * n_kinds + kind), cout, cout, rk, true);
            }
        }
    }
    conv(&mut add, "dec.conv_post", 1, c0 >> hp.upsample_kernel_sizes.len(), PRE_POST_KERNEL, false);
    t
}
