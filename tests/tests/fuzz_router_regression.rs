//! Inputs the `router_reader` fuzz target found (tests/fixtures/fuzz/router_reader/, copied
//! from fuzz/artifacts after a `scripts/fuzz.sh` run): each is refused cleanly or loads and
//! round-trips to an equal router. The first: a held-out accuracy of NaN loaded, and the router
//! then compared unequal to its own round trip; now it is refused, naming the key.

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::router::Router;
use nexus_tests::root;

#[test]
fn found_routers_round_trip() {
    let dir = root().join("tests/fixtures/fuzz/router_reader");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let Ok(file) = GgufFile::from_bytes("router.gguf", data) else { continue };
        let router = match Router::from_file(&file) {
            Ok(r) => r,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                continue;
            }
        };
        let out = tempfile::tempdir().unwrap();
        let back_path = out.path().join("router.gguf");
        router.write(&back_path).unwrap();
        let mut back = Router::load(&back_path).unwrap();
        back.path = router.path.clone();
        assert!(back == router, "{}: the round trip changed the router", path.display());
    }
}

#[test]
fn a_nan_heldout_accuracy_is_refused_by_name() {
    let data = std::fs::read(root().join("tests/fixtures/fuzz/router_reader/roundtrip-47460d0a.gguf")).unwrap();
    let file = GgufFile::from_bytes("router.gguf", data).unwrap();
    let err = Router::from_file(&file).unwrap_err().to_string();
    assert!(err.contains("router.eval.heldout_accuracy NaN is not a fraction"), "{err}");
}
