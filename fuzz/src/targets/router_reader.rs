//! A router file (`run`/`chat --router R.gguf`, a bundle's `router` component) from arbitrary
//! bytes: `Router::from_file` (every key, type and shape checked, values finite) and, when it
//! loads, the classifier run on a pooled state of its width, and the file written back and read
//! again (the same router).

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::router::Router;

pub fn run(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("router.gguf", data.to_vec()) else { return };
    let Ok(router) = Router::from_file(&file) else { return };
    let _ = router.classes();
    // The width is a tensor's length in the file, so this allocation is bounded by the input.
    let pooled = vec![0.5f32; router.backbone.n_embd];
    let p = router.probabilities(&pooled);
    assert_eq!(p.len(), router.capabilities.len() + 1);
    // Through the real writer (temporary file, fsync, rename), on tmpfs where there is one.
    let dir = crate::scratch_path("router");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("router.gguf");
    router.write(&path).expect("a loaded router writes");
    let mut back = Router::load(&path).expect("a written router loads");
    back.path = router.path.clone();
    assert!(back == router, "the round trip changed the router");
}
