//! The native VITS voice on a one-sentence input (147 phoneme ids, "The quick brown fox jumps
//! over the lazy dog by the river bank.", ids from piper-tts 1.8.0's phonemizer), scales 0, 1, 0
//! (deterministic, 300 frames = 3.48 s of audio): whole-sentence synthesis and time to the first
//! streamed chunk at 1 and 2 threads, and each stage alone (where the time goes).
//! RTF = time ÷ 3.483 s. Run: `cargo bench -p nexus-benches --bench vits`.
//! Needs models/en_US-joe-medium.gguf (or VITS_VOICE=path); prints `skipped:` without it.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nexus_runtime::tts::vits::{ChunkStream, Noise, Scales, Voice};

const IDS: [i64; 147] = [
    1, 0, 41, 0, 59, 0, 3, 0, 23, 0, 35, 0, 120, 0, 74, 0, 23, 0, 3, 0, 15, 0, 88, 0, 120, 0, 14, 0, 100, 0, 26,
    0, 3, 0, 19, 0, 120, 0, 51, 0, 122, 0, 23, 0, 31, 0, 3, 0, 17, 0, 108, 0, 120, 0, 102, 0, 25, 0, 28, 0, 31,
    0, 3, 0, 121, 0, 27, 0, 100, 0, 34, 0, 60, 0, 3, 0, 41, 0, 59, 0, 3, 0, 24, 0, 120, 0, 18, 0, 74, 0, 38, 0,
    21, 0, 3, 0, 17, 0, 120, 0, 51, 0, 122, 0, 66, 0, 3, 0, 15, 0, 14, 0, 74, 0, 3, 0, 41, 0, 59, 0, 3, 0, 88, 0,
    120, 0, 74, 0, 34, 0, 60, 0, 3, 0, 15, 0, 120, 0, 39, 0, 44, 0, 23, 0, 10, 0, 2,
];
const ZERO: Scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };
/// The first chunk's frames when streaming (186 ms of audio), as in the notes' §2.4 estimate.
const FIRST_CHUNK: usize = 16;

fn voice() -> Option<Voice> {
    let path = std::env::var_os("VITS_VOICE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/en_US-joe-medium.gguf"));
    if !path.exists() {
        println!("skipped: {} is absent", path.display());
        return None;
    }
    Some(Voice::load(&path).expect("voice loads"))
}

fn bench(c: &mut Criterion) {
    let Some(voice) = voice() else { return };
    let audio = voice.synthesize(&IDS, ZERO, 0).unwrap();
    println!("one sentence: {} samples = {:.3} s", audio.len(), audio.len() as f64 / voice.sample_rate() as f64);

    let mut g = c.benchmark_group("vits");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        g.bench_function(BenchmarkId::new("synthesize_1_sentence", threads), |b| {
            b.iter(|| pool.install(|| voice.synthesize(&IDS, ZERO, 0).unwrap()))
        });
        // Five sentences in turn, as onnxruntime's five-sentence figure (scripts/voice/ort_rtf.py).
        g.bench_function(BenchmarkId::new("synthesize_5_sentences", threads), |b| {
            b.iter(|| pool.install(|| (0..5).map(|_| voice.synthesize(&IDS, ZERO, 0).unwrap().len()).sum::<usize>()))
        });
        g.bench_function(BenchmarkId::new("first_chunk_16_frames", threads), |b| {
            b.iter(|| {
                pool.install(|| {
                    let mut s = ChunkStream::new(&voice, &IDS, ZERO, 0, FIRST_CHUNK).unwrap();
                    s.next_chunk().unwrap()
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("vits_stage");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(4));
    let enc = voice.encode(&IDS).unwrap();
    let logw = voice.log_durations(&enc, 0.0, &mut Noise::new(0)).unwrap();
    let d = voice.frame_durations(&logw, 1.0).unwrap();
    let (z_p, frames) = voice.prior_sample(&enc, &d, 0.0, &mut Noise::new(0));
    let z = voice.flow_reverse(z_p.clone(), frames).unwrap();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let run = |name: &str, g: &mut criterion::BenchmarkGroup<_>, f: &(dyn Fn() + Sync)| {
            g.bench_function(BenchmarkId::new(name, threads), |b| b.iter(|| pool.install(f)));
        };
        run("encoder", &mut g, &|| drop(voice.encode(&IDS).unwrap()));
        run("duration_predictor", &mut g, &|| drop(voice.log_durations(&enc, 0.0, &mut Noise::new(0)).unwrap()));
        run("flow", &mut g, &|| drop(voice.flow_reverse(z_p.clone(), frames).unwrap()));
        run("decoder", &mut g, &|| drop(voice.decode(&z, frames).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
