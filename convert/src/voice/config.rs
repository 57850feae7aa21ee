//! The Piper voice config (`VOICE.onnx.json`): sample rate, espeak voice, default scales and
//! the phoneme id map, each checked for type and range.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::VoiceError;

#[derive(Debug, Clone)]
pub struct VoiceConfig {
    pub sample_rate: u32,
    pub espeak_voice: String,
    pub phoneme_type: String,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    /// `num_symbols`: must equal the embedding's row count.
    pub num_symbols: u32,
    pub num_speakers: u32,
    /// The phoneme map's keys with their ids, sorted by first id.
    pub phoneme_id_map: Vec<(String, Vec<u32>)>,
}

impl VoiceConfig {
    pub fn load(path: &Path) -> Result<Self, VoiceError> {
        let text = std::fs::read_to_string(path).map_err(|error| VoiceError::Io { path: path.to_path_buf(), error })?;
        let json: Json = serde_json::from_str(&text).map_err(|error| VoiceError::Json { path: path.to_path_buf(), error })?;
        Self::from_json(&json, path)
    }

    pub fn from_json(json: &Json, path: &Path) -> Result<Self, VoiceError> {
        let c = Ctx { path: path.to_path_buf(), json };
        let phoneme_type = match c.get(&["phoneme_type"]) {
            Some(_) => c.string(&["phoneme_type"])?,
            None => "espeak".to_string(),
        };
        if phoneme_type != "espeak" {
            return Err(c.bad(&["phoneme_type"], format!("{phoneme_type:?} is not supported (only \"espeak\")")));
        }
        let num_speakers = c.u32(&["num_speakers"])?;
        if num_speakers != 1 {
            return Err(c.bad(&["num_speakers"], format!("{num_speakers} speakers: only single-speaker voices are supported")));
        }
        Ok(Self {
            sample_rate: c.u32(&["audio", "sample_rate"])?,
            espeak_voice: c.string(&["espeak", "voice"])?,
            phoneme_type,
            noise_scale: c.f32(&["inference", "noise_scale"])?,
            length_scale: c.f32(&["inference", "length_scale"])?,
            noise_w: c.f32(&["inference", "noise_w"])?,
            num_symbols: c.u32(&["num_symbols"])?,
            num_speakers,
            phoneme_id_map: c.phoneme_id_map()?,
        })
    }
}

struct Ctx<'a> {
    path: PathBuf,
    json: &'a Json,
}

impl Ctx<'_> {
    fn get(&self, key: &[&str]) -> Option<&Json> {
        key.iter().try_fold(self.json, |v, k| v.get(k))
    }

    fn bad(&self, key: &[&str], problem: String) -> VoiceError {
        VoiceError::Config { path: self.path.clone(), key: key.join("."), problem }
    }

    fn need(&self, key: &[&str]) -> Result<&Json, VoiceError> {
        self.get(key).ok_or_else(|| self.bad(key, "missing".into()))
    }

    fn string(&self, key: &[&str]) -> Result<String, VoiceError> {
        match self.need(key)? {
            Json::String(s) if !s.is_empty() => Ok(s.clone()),
            other => Err(self.bad(key, format!("expected a non-empty string, found {other}"))),
        }
    }

    fn u32(&self, key: &[&str]) -> Result<u32, VoiceError> {
        let v = self.need(key)?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| self.bad(key, format!("expected a positive integer, found {v}")))
    }

    fn f32(&self, key: &[&str]) -> Result<f32, VoiceError> {
        let v = self.need(key)?;
        v.as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(|x| x as f32)
            .ok_or_else(|| self.bad(key, format!("expected a finite number >= 0, found {v}")))
    }

    fn phoneme_id_map(&self) -> Result<Vec<(String, Vec<u32>)>, VoiceError> {
        let key = ["phoneme_id_map"];
        let Json::Object(map) = self.need(&key)? else {
            return Err(self.bad(&key, "expected an object of phoneme → [ids]".into()));
        };
        if map.is_empty() {
            return Err(self.bad(&key, "empty".into()));
        }
        let mut out = Vec::with_capacity(map.len());
        for (phoneme, ids) in map {
            let bad = |what: &str| self.bad(&key, format!("phoneme {phoneme:?}: {what}"));
            let Json::Array(ids) = ids else { return Err(bad("expected an array of ids")) };
            if ids.is_empty() {
                return Err(bad("no ids"));
            }
            let ids = ids
                .iter()
                .map(|id| id.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| bad(&format!("id {id} is not a u32"))))
                .collect::<Result<Vec<u32>, _>>()?;
            out.push((phoneme.clone(), ids));
        }
        out.sort_by_key(|(p, ids)| (ids[0], p.clone()));
        Ok(out)
    }
}
