//! `nexus-cli bundle {pack,inspect,verify,unpack}`, and how `run` and `chat` use a bundle given
//! with `-m`: the verify-report gate (`--allow-unverified`), `--capability NAME`, the voice.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use nexus_convert::bundle::{pack, PackInput};
use nexus_runtime::bundle::{is_bundle, Bundle, Kind, Manifest};
use nexus_runtime::tts::vits::Voice;

use crate::load::Loaded;

#[derive(Args)]
pub struct BundleArgs {
    #[command(subcommand)]
    command: BundleCommand,
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Pack a backbone, LoRA adapters, a router and a voice into one GGUF.
    Pack(PackArgs),
    /// Print a bundle's manifest: components, capabilities, licences, verify report.
    Inspect {
        bundle: PathBuf,
        /// Print the manifest as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every component against the manifest.
    Verify { bundle: PathBuf },
    /// Write every component back to its own file, byte-identical to what was packed.
    Unpack {
        bundle: PathBuf,
        /// Folder to write into (created if absent).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(Args)]
struct PackArgs {
    /// The backbone model GGUF (e.g. the distilled student), packed as it is.
    #[arg(long)]
    backbone: PathBuf,
    /// A capability's LoRA adapter, NAME=FILE (llama.cpp's LoRA GGUF); repeatable.
    #[arg(long = "adapter", value_name = "NAME=FILE")]
    adapters: Vec<String>,
    /// The router GGUF.
    #[arg(long)]
    router: Option<PathBuf>,
    /// The voice GGUF (made by convert-voice).
    #[arg(long)]
    voice: Option<PathBuf>,
    /// The bundle to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

pub fn bundle(args: BundleArgs) -> Result<()> {
    match args.command {
        BundleCommand::Pack(a) => pack_cmd(a),
        BundleCommand::Inspect { bundle, json } => inspect(&bundle, json),
        BundleCommand::Verify { bundle } => verify(&bundle),
        BundleCommand::Unpack { bundle, output } => unpack(&bundle, &output),
    }
}

fn pack_cmd(a: PackArgs) -> Result<()> {
    let mut input = PackInput { backbone: a.backbone, router: a.router, voice: a.voice, adapters: Vec::new() };
    for spec in &a.adapters {
        let Some((name, file)) = spec.split_once('=') else { bail!("--adapter {spec:?}: expected NAME=FILE") };
        input.adapters.push((name.to_string(), PathBuf::from(file)));
    }
    let manifest = pack(&input, &a.output).with_context(|| format!("packing {}", a.output.display()))?;
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    print_components(&manifest);
    println!("verify report: {}", manifest.verify.describe());
    println!("wrote {} ({} bytes)", a.output.display(), size);
    Ok(())
}

fn open(path: &Path) -> Result<Bundle> {
    Ok(Bundle::open(path)?)
}

fn print_components(m: &Manifest) {
    println!("components:");
    for c in &m.components {
        println!(
            "  {:<20} {:<9} {:>12} bytes  sha256 {}  {} tensors  arch {}  from {}{}",
            c.id,
            format!("{:?}", c.kind).to_lowercase(),
            c.size,
            c.sha256,
            c.n_tensors,
            c.architecture.as_deref().unwrap_or("-"),
            c.file_name,
            c.name.as_deref().map_or(String::new(), |n| format!("  ({n})"))
        );
    }
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    let bundle = open(path)?;
    let m = bundle.manifest();
    if json {
        println!("{}", m.to_json());
        return Ok(());
    }
    println!("{}: {} v{}, {} bytes", path.display(), m.format, m.version, bundle.file().file_len());
    print_components(m);
    println!("capabilities:");
    if m.capabilities.is_empty() {
        println!("  none (no adapters)");
    }
    for c in &m.capabilities {
        println!("  {:<20} adapter {}", c.name, c.component);
    }
    match m.of_kind(Kind::Router) {
        Some(r) => println!("router: {} (routes each request unless --capability names one)", r.id),
        None => println!("router: none (--capability NAME picks an adapter)"),
    }
    println!("licences:");
    for l in &m.licenses {
        println!("  {:<24} {}{}", l.component, l.license, l.note.as_deref().map_or(String::new(), |n| format!(" ({n})")));
    }
    println!("verify report: {}", m.verify.describe());
    Ok(())
}

fn verify(path: &Path) -> Result<()> {
    let bundle = open(path)?;
    let mut failed = Vec::new();
    for check in bundle.verify() {
        match &check.result {
            Ok(()) => println!("ok      {}", check.id),
            Err(e) => {
                println!("FAILED  {}: {e}", check.id);
                failed.push(check.id);
            }
        }
    }
    if !failed.is_empty() {
        bail!("{}: {} failed verification: {}", path.display(), plural(failed.len()), failed.join(", "));
    }
    println!("{}: every component matches its sha256", path.display());
    Ok(())
}

fn plural(n: usize) -> String {
    match n {
        1 => "1 component".into(),
        n => format!("{n} components"),
    }
}

fn unpack(path: &Path, dir: &Path) -> Result<()> {
    let bundle = open(path)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for c in &bundle.manifest().components {
        let out = bundle.unpack(&c.id, dir)?;
        println!("{:<20} {}", c.id, out.display());
    }
    Ok(())
}

/// `run` and `chat` flags that only mean something for a bundle.
#[derive(Args, Debug, Clone, Default)]
pub struct UseArgs {
    /// Apply this capability's adapter (a bundle's, or one of --lora-cap NAME=FILE) for every
    /// request; `none` runs the base; `auto` asks the router (the default when there is one).
    #[arg(long = "capability", value_name = "NAME")]
    pub capability: Option<String>,
    /// Load a bundle whose verify report says the contract failed (or that was never verified).
    #[arg(long = "allow-unverified")]
    pub allow_unverified: bool,
}

/// After `load`: when the model file is a bundle, refuses it if its verify report failed
/// (unless `--allow-unverified`, then warns naming the failing capability) and attaches the
/// adapter of `--capability`. Returns the bundle, or `None` for a plain model.
pub fn attach(loaded: &mut Loaded, args: &UseArgs) -> Result<Option<Bundle>> {
    let file = loaded.model.file().clone();
    if !is_bundle(&file) {
        if let Some(cap) = &args.capability {
            bail!("--capability {cap}: {} is not a bundle (nexus-cli bundle pack makes one); for a plain model use --lora FILE", file.path().display());
        }
        return Ok(None);
    }
    let bundle = Bundle::from_file(file)?;
    let path = bundle.path().display().to_string();
    let status = bundle.verify_status();
    if status.needs_consent() {
        if !args.allow_unverified {
            bail!("{path}: the backbone is {}; pass --allow-unverified to load it anyway", status.describe());
        }
        eprintln!("warning: {path}: the backbone is {}; loading it because of --allow-unverified", status.describe());
    }
    let m = bundle.manifest();
    match args.capability.as_deref() {
        // With a router, `router::attach` routes each request and says so.
        None if !m.capabilities.is_empty() && m.of_kind(Kind::Router).is_none() => {
            eprintln!("bundle: capabilities {}; no --capability given, so the backbone runs without an adapter", m.capability_list());
        }
        None => {}
        Some("auto") => match m.of_kind(Kind::Router) {
            None => bail!(
                "--capability auto asks the router, but {path} has no router: name a capability with --capability NAME ({})",
                m.capability_list()
            ),
            Some(_) => bail!(
                "--capability auto: {path}'s router is not run by this command; name a capability with --capability NAME ({})",
                m.capability_list()
            ),
        },
        Some(name) => {
            let adapter = bundle.adapter(name)?;
            loaded.model.apply_lora(&[(&adapter, 1.0)]).with_context(|| format!("{path}: attaching capability {name:?}"))?;
            eprintln!("bundle: capability {name} (adapter.{name}, {} tensors) applied", adapter.weights.len());
        }
    }
    Ok(Some(bundle))
}

/// The bundled voice for `chat --speak` when no `--voice` is given.
pub fn voice(bundle: Option<&Bundle>, voice_flag: Option<&Path>) -> Result<Option<Voice>> {
    match (bundle, voice_flag) {
        (Some(b), None) => Ok(b.voice()?),
        _ => Ok(None),
    }
}
