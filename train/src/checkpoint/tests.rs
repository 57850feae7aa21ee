//! Checkpoints: bit-exact round trips, the crash windows of an atomic save, and every kind of
//! damaged or inconsistent file refused with the file (and tensor) named.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{SafeTensors, TensorView};
use serde_json::json;

fn config(tied: bool) -> StudentConfig {
    StudentConfig {
        n_vocab: 13,
        n_embd: 8,
        n_layer: 2,
        n_head: 2,
        n_head_kv: 1,
        head_dim: 4,
        n_ff: 12,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        n_ctx: 32,
        tied,
    }
}

fn random(cfg: &StudentConfig, rng: &mut ChaCha8Rng) -> Params {
    let mut p = Params::zeros(cfg);
    for t in p.tensors_mut() {
        t.iter_mut().for_each(|x| *x = rng.gen_range(-1.0..1.0));
    }
    p
}

fn sample(tied: bool, seed: u64) -> Checkpoint {
    let cfg = config(tied);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = random(&cfg, &mut rng);
    // Values whose bits a lossy path would change.
    params.embed[..5].copy_from_slice(&[
        -0.0,
        f32::MIN_POSITIVE / 3.0,
        f32::from_bits(0x7fc0_1234),
        f32::INFINITY,
        1.0 + f32::EPSILON,
    ]);
    Checkpoint {
        m: random(&cfg, &mut rng),
        v: random(&cfg, &mut rng),
        extra: vec![
            ("anchor.1.map".into(), (0..24).map(|_| rng.gen()).collect()),
            ("anchor.0.map".into(), vec![0.5; 6]),
            ("empty".into(), vec![]),
        ],
        state: json!({"step": seed, "data": {"offset": 123_456_789_012u64}, "loss": 2.5}),
        config: cfg,
        params,
    }
}

fn bits(p: &Params) -> Vec<(String, Vec<u32>)> {
    let named = p.named().into_iter();
    named
        .map(|(n, t)| (n, t.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.config, b.config);
    assert_eq!(bits(&a.params), bits(&b.params));
    assert_eq!(bits(&a.m), bits(&b.m));
    assert_eq!(bits(&a.v), bits(&b.v));
    let names = |c: &Checkpoint| c.extra.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "extra tensors keep their order");
    for ((_, x), (_, y)) in a.extra.iter().zip(&b.extra) {
        assert_eq!(x, y);
    }
    assert_eq!(a.state, b.state);
}

/// The tensor names a safetensors file holds, sorted.
fn names_in(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut names: Vec<String> = (SafeTensors::deserialize(&bytes).unwrap().names())
        .into_iter()
        .cloned()
        .collect();
    names.sort();
    names
}

/// Rewrites a safetensors file through `edit`, which gets (and may drop or replace) each
/// tensor as (name, dtype, shape, bytes).
fn rewrite(path: &Path, edit: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = (st.tensors().into_iter())
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views = tensors
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()));
    let out = safetensors::serialize(views, &None).unwrap();
    std::fs::write(path, out).unwrap();
}

fn edit_state(run: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = run.join(DIR).join(STATE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn load_err(run: &Path) -> String {
    Checkpoint::load(run)
        .expect_err("load should fail")
        .to_string()
}

#[test]
fn round_trip_is_bit_exact_tied_and_untied() {
    for tied in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert!(!exists(&run));
        let ck = sample(tied, 1);
        let at = ck.view().save(&run).unwrap();
        assert_eq!(at, run.join(DIR));
        assert!(exists(&run));
        assert!(!run.join(TMP_DIR).exists() && !run.join(OLD_DIR).exists());
        assert_same(&ck, &Checkpoint::load(&run).unwrap());

        let mut want: Vec<String> = ck.params.named().into_iter().map(|(n, _)| n).collect();
        assert_eq!(want.iter().any(|n| n == "output.weight"), !tied);
        want.sort();
        assert_eq!(names_in(&at.join(WEIGHTS)), want);
        let moments = names_in(&at.join(OPTIMIZER));
        assert_eq!(moments.len(), 2 * want.len());
        assert!(want
            .iter()
            .all(|n| moments.contains(&format!("m.{n}")) && moments.contains(&format!("v.{n}"))));
    }
}

#[test]
fn a_second_save_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    sample(false, 1).view().save(dir.path()).unwrap();
    let b = sample(false, 2);
    b.view().save(dir.path()).unwrap();
    assert_same(&b, &Checkpoint::load(dir.path()).unwrap());
    assert!(!dir.path().join(TMP_DIR).exists() && !dir.path().join(OLD_DIR).exists());
}

/// The three crash windows of a save: before the first rename (a partial `.tmp` beside the
/// old checkpoint), between the renames (only `.old`), after the second (a stale `.old`).
/// Each loads the newest complete checkpoint, and the next save cleans up.
#[test]
fn interrupted_saves_leave_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let (a, b) = (sample(true, 1), sample(true, 2));
    a.view().save(run).unwrap();

    std::fs::create_dir(run.join(TMP_DIR)).unwrap();
    std::fs::write(run.join(TMP_DIR).join(WEIGHTS), b"partial").unwrap();
    assert_same(&a, &Checkpoint::load(run).unwrap());

    std::fs::rename(run.join(DIR), run.join(OLD_DIR)).unwrap();
    assert!(exists(run));
    assert_same(&a, &Checkpoint::load(run).unwrap());

    b.view().save(run).unwrap();
    assert_same(&b, &Checkpoint::load(run).unwrap());
    assert!(!run.join(TMP_DIR).exists() && !run.join(OLD_DIR).exists());

    // Crash after the second rename: `.old` holds a, `checkpoint` holds b.
    a.view().save(&run.join("elsewhere")).unwrap();
    std::fs::rename(run.join("elsewhere").join(DIR), run.join(OLD_DIR)).unwrap();
    assert_same(&b, &Checkpoint::load(run).unwrap());
    a.view().save(run).unwrap();
    assert_same(&a, &Checkpoint::load(run).unwrap());
    assert!(!run.join(OLD_DIR).exists());
}

#[test]
fn damaged_files_are_named() {
    for file in [WEIGHTS, OPTIMIZER, EXTRA, STATE] {
        for truncate in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            sample(false, 3).view().save(dir.path()).unwrap();
            let path = dir.path().join(DIR).join(file);
            let mut bytes = std::fs::read(&path).unwrap();
            if truncate {
                bytes.truncate(bytes.len() / 2);
            } else {
                bytes[9..13].copy_from_slice(b"\xff\x00}]");
            }
            std::fs::write(&path, bytes).unwrap();
            let err = load_err(dir.path());
            assert!(err.contains(file), "{file} truncate={truncate}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        sample(false, 3).view().save(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(DIR).join(file)).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(file), "{file} removed: {err}");
    }
}

#[test]
fn missing_wrong_dtype_and_unexpected_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let ck = sample(false, 4);
    let save = || ck.view().save(run).unwrap().join(WEIGHTS);

    let weights = save();
    rewrite(&weights, |t| t.retain(|(n, ..)| n != "blk.1.ffn_up.weight"));
    let err = load_err(run);
    assert!(
        err.contains(WEIGHTS) && err.contains("blk.1.ffn_up.weight: missing"),
        "{err}"
    );

    let weights = save();
    rewrite(&weights, |t| {
        let x = t
            .iter_mut()
            .find(|(n, ..)| n == "blk.0.attn_k.weight")
            .unwrap();
        x.1 = Dtype::F16;
        x.3.truncate(x.3.len() / 2);
    });
    let err = load_err(run);
    assert!(
        err.contains("blk.0.attn_k.weight") && err.contains("dtype F16"),
        "{err}"
    );

    let weights = save();
    rewrite(&weights, |t| {
        t.push(("lora.a".into(), Dtype::F32, vec![1], vec![0; 4]))
    });
    assert!(load_err(run).contains("lora.a: unexpected"));

    let at = save();
    rewrite(&at.with_file_name(EXTRA), |t| {
        t.retain(|(n, ..)| n != "anchor.0.map")
    });
    let err = load_err(run);
    assert!(err.contains(EXTRA), "{err}");
    assert!(Checkpoint::load(run).is_err());
}

#[test]
fn state_must_agree_with_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let ck = sample(false, 5);
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 6] = [
        ("format version 2", |v| v["format_version"] = json!(2)),
        ("no format_version", |v| {
            v.as_object_mut().unwrap().remove("format_version");
        }),
        (
            "blk.0.ffn_gate.weight: shape [12, 8], expected [16, 8]",
            |v| v["config"]["n_ff"] = json!(16),
        ),
        (
            "output.weight: unexpected: the config says the head is tied",
            |v| v["config"]["tied"] = json!(true),
        ),
        // Absurd sizes are refused from the tensor count and shapes, before any allocation.
        ("tensors, the config (n_layer 1152921504606846976", |v| {
            v["config"]["n_layer"] = json!(1u64 << 60)
        }),
        (
            "token_embd.weight: shape [13, 8], expected [1099511627776, 8]",
            |v| v["config"]["n_vocab"] = json!(1u64 << 40),
        ),
    ];
    for (want, edit) in cases {
        ck.view().save(run).unwrap();
        edit_state(run, edit);
        let err = load_err(run);
        assert!(err.contains(want), "want {want:?}, got {err}");
        assert!(err.contains(STATE) || err.contains(WEIGHTS), "{err}");
    }
    ck.view().save(run).unwrap();
    edit_state(run, |v| v["extra"][0]["len"] = json!(25));
    let err = load_err(run);
    assert!(err.contains("anchor.1.map") && err.contains(EXTRA), "{err}");
}

#[test]
fn save_refuses_inconsistent_sets_and_keeps_the_old_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let good = sample(false, 6);
    good.view().save(run).unwrap();

    let tied_cfg = config(true);
    let bad = CheckpointRef {
        config: &tied_cfg,
        ..good.view()
    };
    let err = bad.save(run).expect_err("tied config, untied params");
    assert!(matches!(err, CheckpointError::Invalid { .. }), "{err}");

    let mut short = good.m.clone();
    short.layers[1].wv.pop();
    let err = CheckpointRef {
        m: &short,
        ..good.view()
    }
    .save(run)
    .err()
    .unwrap();
    assert!(err.to_string().contains("m: blk.1.attn_v.weight"), "{err}");

    for name in ["anchor.0.map", "__metadata__"] {
        let mut extra = good.extra.clone();
        extra.push((name.into(), vec![1.0]));
        let r = CheckpointRef {
            extra: &extra,
            ..good.view()
        }
        .save(run);
        assert!(matches!(r, Err(CheckpointError::Invalid { .. })), "{name}");
    }
    assert!(!run.join(TMP_DIR).exists());
    assert_same(&good, &Checkpoint::load(run).unwrap());
}

#[test]
fn no_checkpoint_is_an_error_naming_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let err = Checkpoint::load(dir.path()).err().unwrap();
    assert!(matches!(err, CheckpointError::Missing { .. }));
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    std::fs::create_dir(dir.path().join(TMP_DIR)).unwrap();
    assert!(!exists(dir.path()));
    assert!(Checkpoint::load(dir.path()).is_err());
}

#[test]
fn tensor_shapes_follow_params_named() {
    for tied in [false, true] {
        let cfg = config(tied);
        let p = Params::zeros(&cfg);
        let shapes = tensor_shapes(&cfg);
        assert_eq!(shapes.len(), p.named().len());
        for ((n, t), (sn, shape)) in p.named().iter().zip(&shapes) {
            assert_eq!(n, sn);
            assert_eq!(t.len(), shape.iter().product::<usize>(), "{n}");
        }
    }
}
