//! Pruning against the runtime: teachers written as F32 GGUFs from random weights (nothing lost
//! to quantization), pruned, written back and run by `nexus_runtime::model::Model`.

use super::*;
use crate::test_util::assert_close;

use nexus_runtime::model::Logits;

fn teacher_config(tied: bool) -> StudentConfig {
    StudentConfig {
        n_vocab: 13,
        n_embd: 12,
        n_layer: 3,
        n_head: 6,
        n_head_kv: 2,
        head_dim: 4,
        n_ff: 16,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        n_ctx: 32,
        tied,
    }
}

/// Random weights at a scale that keeps activations O(1).
fn random_params(cfg: &StudentConfig, rng: &mut ChaCha8Rng) -> Params {
    let mut p = Params::zeros(cfg);
    let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
    for (t, name) in p.tensors_mut().into_iter().zip(names) {
        let norm = name.ends_with("norm.weight");
        for v in t.iter_mut() {
            *v = if norm { 1.0 } else { 0.0 } + rng.gen_range(-0.5..0.5);
        }
    }
    p
}

fn random_importance(cfg: &StudentConfig, rng: &mut ChaCha8Rng) -> Importance {
    let mut v = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(0.0..1.0))
            .collect::<Vec<f32>>()
    };
    Importance {
        layers: v(cfg.n_layer),
        heads: (0..cfg.n_layer).map(|_| v(cfg.n_head)).collect(),
        ffn_channels: (0..cfg.n_layer).map(|_| v(cfg.n_ff)).collect(),
        embd_channels: v(cfg.n_embd),
    }
}


fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nexus-init-{what}-{}.gguf", std::process::id()))
}

/// Writes `p`, loads it with the runtime and removes the file.
fn load(cfg: &StudentConfig, p: &Params, extra: &[(&str, Vec<f32>)], what: &str) -> Model {
    let path = temp_path(what);
    crate::test_util::write_f32_gguf(cfg, p, extra, &path);
    let model = Model::load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    model
}

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(tokens.len());
    model.forward(tokens, &mut cache, Logits::All).unwrap()
}

/// Every element of the student's `[rows.len()][cols.len()]` matrix is the teacher's element
/// at (`rows[r]`, `cols[c]`) of its `[..][t_cols]` matrix.
fn assert_selected(
    what: &str,
    s: &[f32],
    t: &[f32],
    t_cols: usize,
    rows: &[usize],
    cols: &[usize],
) {
    assert_eq!(s.len(), rows.len() * cols.len(), "{what}: size");
    for (r, &tr) in rows.iter().enumerate() {
        for (c, &tc) in cols.iter().enumerate() {
            assert_eq!(
                s[r * cols.len() + c],
                t[tr * t_cols + tc],
                "{what} [{r}][{c}]"
            );
        }
    }
}

/// Checks every student weight against the teacher weight `pruning` says it came from.
fn assert_pruned_from(tc: &StudentConfig, t: &Params, s: &Params, pruning: &Pruning) {
    let (hd, d, ff) = (tc.head_dim, tc.n_embd, tc.n_ff);
    let embd = &pruning.embd_channels;
    let vocab: Vec<usize> = (0..tc.n_vocab).collect();
    let all = [0usize];
    assert_selected("embed", &s.embed, &t.embed, d, &vocab, embd);
    assert_selected("output_norm", &s.output_norm, &t.output_norm, d, &all, embd);
    if let Some(out) = &s.output {
        let t_out = t.output.as_ref().unwrap_or(&t.embed);
        assert_selected("output", out, t_out, d, &vocab, embd);
    }
    for (i, &l) in pruning.layers.iter().enumerate() {
        let (sl, tl) = (&s.layers[i], &t.layers[l]);
        let q = head_rows(&pruning.heads[i], hd);
        let kv = head_rows(&pruning.kv_groups[i], hd);
        let ffn = &pruning.ffn_channels[i];
        let w = |n: &str| format!("layer {i} (teacher {l}) {n}");
        assert_selected(&w("attn_norm"), &sl.attn_norm, &tl.attn_norm, d, &all, embd);
        assert_selected(&w("ffn_norm"), &sl.ffn_norm, &tl.ffn_norm, d, &all, embd);
        assert_selected(&w("wq"), &sl.wq, &tl.wq, d, &q, embd);
        assert_selected(&w("wk"), &sl.wk, &tl.wk, d, &kv, embd);
        assert_selected(&w("wv"), &sl.wv, &tl.wv, d, &kv, embd);
        assert_selected(&w("wo"), &sl.wo, &tl.wo, tc.q_dim(), embd, &q);
        assert_selected(&w("w_gate"), &sl.w_gate, &tl.w_gate, d, ffn, embd);
        assert_selected(&w("w_up"), &sl.w_up, &tl.w_up, d, ffn, embd);
        assert_selected(&w("w_down"), &sl.w_down, &tl.w_down, ff, embd, ffn);
    }
}

/// A student config equal to the teacher's keeps everything: the same weights, bit for bit,
/// and through the runtime the same logits, whatever the importance says.
#[test]
fn keeping_everything_reproduces_the_teacher() {
    for tied in [false, true] {
        let cfg = teacher_config(tied);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = random_params(&cfg, &mut rng);
        let teacher = load(&cfg, &p, &[], &format!("all-teacher-{tied}"));
        let (q, pruning) = init_pruned(&teacher, &random_importance(&cfg, &mut rng), &cfg).unwrap();
        assert!(q == p, "tied={tied}: weights differ");
        assert_eq!(pruning.layers, vec![0, 1, 2]);
        assert_eq!(pruning.heads[1], (0..6).collect::<Vec<_>>());
        assert_eq!(pruning.kv_groups[2], vec![0, 1]);
        assert_eq!(pruning.embd_channels, (0..12).collect::<Vec<_>>());
        let student = load(&cfg, &q, &[], &format!("all-student-{tied}"));
        let tokens: Vec<u32> = (0..9).map(|_| rng.gen_range(0..13)).collect();
        assert_close(
            &format!("tied={tied} logits"),
            &logits(&student, &tokens),
            &logits(&teacher, &tokens),
            1e-4,
        );
    }
}

/// With the full residual width kept, dropping a head, an FFN channel or a layer is the same
/// as zeroing its output projection (a layer with both zeroed is the identity): the pruned
/// student's logits equal those of the teacher with the dropped parts zeroed. This runs the
/// copied Q/K rows through the same runtime as the teacher, so a wrong row order, head
/// mapping or GQA grouping would show.
#[test]
fn pruning_equals_zeroing_what_was_dropped() {
    let tc = teacher_config(false);
    for (n_head, n_head_kv) in [(4, 2), (3, 1)] {
        let cfg = StudentConfig {
            n_layer: 2,
            n_head,
            n_head_kv,
            n_ff: 10,
            ..tc.clone()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(2 + n_head as u64);
        let p = random_params(&tc, &mut rng);
        let importance = random_importance(&tc, &mut rng);
        let original = load(&tc, &p, &[], "zero-original");
        let (_, pruning) = init_pruned(&original, &importance, &cfg).unwrap();
        assert_eq!(pruning.heads[0].len(), n_head);

        let mut zeroed = p.clone();
        let hd = tc.head_dim;
        for (l, layer) in zeroed.layers.iter_mut().enumerate() {
            let i = pruning.layers.iter().position(|&k| k == l);
            let kept_heads = i.map_or(vec![], |i| pruning.heads[i].clone());
            let kept_ffn = i.map_or(vec![], |i| pruning.ffn_channels[i].clone());
            for (j, v) in layer.wo.iter_mut().enumerate() {
                if !kept_heads.contains(&(j % tc.q_dim() / hd)) {
                    *v = 0.0;
                }
            }
            for (j, v) in layer.w_down.iter_mut().enumerate() {
                if !kept_ffn.contains(&(j % tc.n_ff)) {
                    *v = 0.0;
                }
            }
        }
        let teacher = load(&tc, &zeroed, &[], "zero-teacher");
        let (q, again) = init_pruned(&teacher, &importance, &cfg).unwrap();
        assert_eq!(again, pruning);
        assert_pruned_from(&tc, &p, &q, &pruning);
        let student = load(&cfg, &q, &[], "zero-student");
        let tokens: Vec<u32> = (0..11).map(|_| rng.gen_range(0..13)).collect();
        assert_close(
            &format!("{n_head}/{n_head_kv} heads: logits"),
            &logits(&student, &tokens),
            &logits(&teacher, &tokens),
            1e-4,
        );
    }
}

/// Hand-made importance: the chosen layers, groups, heads and channels are the largest, in
/// their original order, and every weight is the teacher's element they map to (residual
/// width pruned too; an untied student of a tied teacher gets the embedding as its head).
#[test]
fn pruning_keeps_the_most_important_parts() {
    let tc = teacher_config(true);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let p = random_params(&tc, &mut rng);
    let ffn = |l: usize| {
        (0..16)
            .map(|c| ((7 * c + 3 * l) % 16) as f32)
            .collect::<Vec<_>>()
    };
    let importance = Importance {
        layers: vec![0.5, 0.1, 0.9],
        heads: vec![
            vec![0.1, 0.2, 0.3, 0.9, 0.05, 0.4],
            vec![1.0; 6],
            vec![0.8, 0.7, 0.0, 0.1, 0.1, 0.1],
        ],
        ffn_channels: (0..3).map(ffn).collect(),
        embd_channels: (0..12).map(|c| ((5 * c) % 12) as f32).collect(),
    };
    let cfg = StudentConfig {
        n_embd: 8,
        n_layer: 2,
        n_head: 2,
        n_head_kv: 1,
        n_ff: 5,
        tied: false,
        ..tc.clone()
    };
    let teacher = load(&tc, &p, &[], "choose");
    let (q, pruning) = init_pruned(&teacher, &importance, &cfg).unwrap();
    assert_eq!(pruning.layers, vec![0, 2]);
    assert_eq!(pruning.kv_groups, vec![vec![1], vec![0]]);
    assert_eq!(pruning.heads, vec![vec![3, 5], vec![0, 1]]);
    let top = |l: usize| -> Vec<usize> { (0..16).filter(|&c| ffn(l)[c] >= 11.0).collect() };
    assert_eq!(pruning.ffn_channels, vec![top(0), top(2)]);
    let embd: Vec<usize> = (0..12).filter(|&c| (5 * c) % 12 >= 4).collect();
    assert_eq!(pruning.embd_channels, embd);
    assert_pruned_from(&tc, &p, &q, &pruning);
    // One element spelled out: student wq row 5 is teacher head 5's row 1, column 2 is
    // teacher residual channel embd[2].
    assert_eq!(
        q.layers[1].wq[5 * 8 + 2],
        p.layers[2].wq[(4 + 1) * 12 + embd[2]]
    );
    assert_eq!(
        q.layers[0].wq[5 * 8 + 2],
        p.layers[0].wq[(5 * 4 + 1) * 12 + embd[2]]
    );
    assert_eq!(q.n_elements(), cfg.n_params());
    let json = serde_json::to_string(&pruning).unwrap();
    assert_eq!(serde_json::from_str::<Pruning>(&json).unwrap(), pruning);
}

#[test]
fn top_k_breaks_ties_by_index() {
    assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0, 3.0], 2), vec![1, 2]);
    assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0, 3.0], 4), vec![1, 2, 3, 4]);
    assert_eq!(top_k(&[0.5, -1.0], 0), Vec::<usize>::new());
}

#[test]
fn bad_configs_teachers_and_importance_are_errors() {
    let tc = teacher_config(true);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let p = random_params(&tc, &mut rng);
    let imp = random_importance(&tc, &mut rng);
    let teacher = load(&tc, &p, &[], "errors");
    let err = |cfg: &StudentConfig, imp: &Importance| {
        init_pruned(&teacher, imp, cfg)
            .expect_err("an error")
            .to_string()
    };
    let with = |f: &dyn Fn(&mut StudentConfig)| {
        let mut c = tc.clone();
        f(&mut c);
        c
    };
    let cases: Vec<(StudentConfig, &str)> = vec![
        (with(&|c| c.n_vocab = 12), "n_vocab is 12"),
        (with(&|c| c.head_dim = 2), "head_dim is 2"),
        (with(&|c| c.rope_base = 500.0), "rope_base"),
        (with(&|c| c.n_layer = 4), "n_layer is 4, larger"),
        (with(&|c| c.n_embd = 13), "n_embd is 13, larger"),
        (with(&|c| c.n_ff = 17), "n_ff is 17, larger"),
        (with(&|c| (c.n_head, c.n_head_kv) = (4, 1)), "group size"),
        (
            with(&|c| (c.n_head, c.n_head_kv) = (3, 3)),
            "n_head_kv is 3, larger",
        ),
        (
            with(&|c| (c.n_head, c.n_head_kv) = (5, 2)),
            "must be a positive multiple",
        ),
        (with(&|c| c.n_ff = 0), "n_ff must be positive"),
    ];
    for (cfg, want) in cases {
        let e = err(&cfg, &imp);
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
    let with_imp = |f: &dyn Fn(&mut Importance)| {
        let mut i = imp.clone();
        f(&mut i);
        i
    };
    let cases: Vec<(Importance, &str)> = vec![
        (
            with_imp(&|i| i.layers.truncate(2)),
            "importance layers: expected 3",
        ),
        (
            with_imp(&|i| i.heads[1].truncate(5)),
            "heads[1]: expected 6",
        ),
        (
            with_imp(&|i| i.ffn_channels.truncate(1)),
            "ffn_channels (layers)",
        ),
        (
            with_imp(&|i| i.ffn_channels[2].push(0.0)),
            "ffn_channels[2]: expected 16",
        ),
        (
            with_imp(&|i| i.embd_channels.truncate(11)),
            "embd_channels: expected 12",
        ),
        (
            with_imp(&|i| i.heads[2][0] = f32::NAN),
            "heads[2][0] is NaN",
        ),
    ];
    for (bad, want) in cases {
        let e = err(&tc, &bad);
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
    // A teacher with Q biases computes what the bias-free student cannot.
    let biased = load(
        &tc,
        &p,
        &[("blk.1.attn_q.bias", vec![0.1; tc.q_dim()])],
        "biased",
    );
    let e = init_pruned(&biased, &imp, &tc).expect_err("biased teacher");
    assert!(matches!(e, InitError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("blk.1.attn_q.bias"), "{e}");
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn init_random_has_gpt2_statistics_and_is_deterministic() {
    let cfg = StudentConfig {
        n_vocab: 256,
        n_embd: 64,
        n_layer: 4,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        n_ff: 128,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        n_ctx: 64,
        tied: false,
    };
    let p = init_random(&cfg, 7);
    let residual_std = 0.02 / (8f64).sqrt();
    let gather = |f: &dyn Fn(&LayerParams) -> &Vec<f32>| -> Vec<f32> {
        p.layers.iter().flat_map(|l| f(l).iter().copied()).collect()
    };
    let groups: Vec<(&str, Vec<f32>, f64)> = vec![
        ("embed", p.embed.clone(), 0.02),
        ("output", p.output.clone().unwrap(), 0.02),
        ("wq", gather(&|l| &l.wq), 0.02),
        ("w_up", gather(&|l| &l.w_up), 0.02),
        ("wo", gather(&|l| &l.wo), residual_std),
        ("w_down", gather(&|l| &l.w_down), residual_std),
    ];
    for (what, v, std) in groups {
        let (m, s) = mean_std(&v);
        let n = v.len() as f64;
        assert!(m.abs() < 4.0 * std / n.sqrt(), "{what}: mean {m}");
        assert!((s / std - 1.0).abs() < 0.03, "{what}: std {s}, want {std}");
        // Gaussian, not uniform: 68.3% within one σ (uniform of that σ: 57.7%).
        let within = v.iter().filter(|&&x| (x as f64).abs() < std).count() as f64 / n;
        assert!((within - 0.6827).abs() < 0.02, "{what}: {within} within 1σ");
    }
    assert!(p
        .layers
        .iter()
        .all(|l| l.attn_norm.iter().chain(&l.ffn_norm).all(|&x| x == 1.0)));
    assert!(p.output_norm.iter().all(|&x| x == 1.0));
    assert!(init_random(&cfg, 7) == p, "same seed, same weights");
    assert!(init_random(&cfg, 8) != p, "another seed, other weights");
    let tied = init_random(
        &StudentConfig {
            tied: true,
            ..cfg.clone()
        },
        7,
    );
    assert!(tied.output.is_none());
    assert_eq!(
        tied.n_elements(),
        StudentConfig { tied: true, ..cfg }.n_params()
    );
}

/// The real teacher pruned to d=384, 8 layers, 6 heads / 2 KV, n_ff 1024 with a synthetic
/// importance; prints the time. `cargo test --release -p nexus-train --lib prune_smollm2 --
/// --ignored --nocapture`.
#[test]
#[ignore = "needs models/SmolLM2-135M-Instruct.Q4_1.gguf"]
fn prune_smollm2() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    let teacher = Model::load(path).unwrap();
    let t = teacher.config.clone();
    let cfg = StudentConfig {
        n_vocab: t.n_vocab,
        n_embd: 384,
        n_layer: 8,
        n_head: 6,
        n_head_kv: 2,
        head_dim: t.head_dim,
        n_ff: 1024,
        rms_eps: t.rms_eps,
        rope_base: t.rope_base,
        n_ctx: 2048,
        tied: true,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let tcfg = StudentConfig {
        n_vocab: t.n_vocab,
        n_embd: t.n_embd,
        n_layer: t.n_layer,
        n_head: t.n_head,
        n_head_kv: t.n_head_kv,
        head_dim: t.head_dim,
        n_ff: t.n_ff,
        ..cfg.clone()
    };
    let importance = random_importance(&tcfg, &mut rng);
    let start = std::time::Instant::now();
    let (p, pruning) = init_pruned(&teacher, &importance, &cfg).unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pruned SmolLM2-135M to {} parameters in {secs:.3} s; layers {:?}",
        p.n_elements(),
        pruning.layers
    );
    assert_eq!(p.n_elements(), cfg.n_params());
    assert!(p
        .named()
        .iter()
        .all(|(_, t)| t.iter().all(|x| x.is_finite())));
    let acts = crate::student::forward(&cfg, &p, &[1, 504, 3458, 28, 260, 1543], 1).unwrap();
    assert!(acts.hidden().iter().all(|x| x.is_finite()));
}
