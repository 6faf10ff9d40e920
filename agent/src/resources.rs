//! What an agent offers: `--resources` and `--attributes` in Mesos' text format, and what the host has when they are
//! not given.
//!
//! `cpus:4;mem:8192;disk:20000;ports:[31000-32000,33000-33010]` — scalars in cores and MiB, ports as inclusive
//! ranges. `rack:a;zone:z1` — attributes. Errors name the item and say what was expected.

use std::collections::BTreeMap;
use std::path::Path;

use agora_schemas::{PortRange, Resources};

/// The port range offered when `--resources` names none (Mesos' default).
pub const DEFAULT_PORTS: PortRange = PortRange(31000, 32000);

/// Why `--resources` or `--attributes` could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag} item {item:?}: {message}")]
pub struct ParseError {
    /// `--resources` or `--attributes`.
    pub flag: &'static str,
    /// The offending `name:value` item.
    pub item: String,
    /// What was expected.
    pub message: String,
}

fn error(flag: &'static str, item: &str, message: impl Into<String>) -> ParseError {
    ParseError { flag, item: item.to_owned(), message: message.into() }
}

/// Reads `cpus:4;mem:8192;disk:20000;ports:[31000-32000]`. Names not given are `None` in the answer's fields
/// (filled from the host by [`detect`]).
///
/// # Errors
/// An unknown name, a negative or non-numeric amount, a malformed or reversed port range, a name given twice.
pub fn parse_resources(text: &str) -> Result<PartialResources, ParseError> {
    const FLAG: &str = "--resources";
    let mut out = PartialResources::default();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) =
            item.split_once(':').ok_or_else(|| error(FLAG, item, "expected name:value (e.g. cpus:4)"))?;
        let (name, value) = (name.trim(), value.trim());
        let scalar = || -> Result<f64, ParseError> {
            match value.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(error(FLAG, item, "expected a non-negative number")),
            }
        };
        let slot = match name {
            "cpus" => &mut out.cpus,
            "mem" => &mut out.mem,
            "disk" => &mut out.disk,
            "ports" => {
                if out.ports.is_some() {
                    return Err(error(FLAG, item, "ports given twice"));
                }
                out.ports = Some(parse_ports(item, value)?);
                continue;
            }
            other => {
                return Err(error(
                    FLAG,
                    item,
                    format!("unknown resource {other:?} (expected cpus, mem, disk or ports)"),
                ));
            }
        };
        if slot.is_some() {
            return Err(error(FLAG, item, format!("{name} given twice")));
        }
        *slot = Some(scalar()?);
    }
    Ok(out)
}

fn parse_ports(item: &str, value: &str) -> Result<Vec<PortRange>, ParseError> {
    const FLAG: &str = "--resources";
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| error(FLAG, item, "expected ports:[from-to,from-to]"))?;
    let mut ranges: Vec<PortRange> = Vec::new();
    for range in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| error(FLAG, item, format!("{p:?} is not a port")))
        };
        let (from, to) = (port(from)?, port(to)?);
        if from > to {
            return Err(error(FLAG, item, format!("range {from}-{to} ends before it starts")));
        }
        if ranges.iter().any(|r| from <= r.1 && r.0 <= to) {
            return Err(error(FLAG, item, format!("range {from}-{to} overlaps another")));
        }
        ranges.push(PortRange(from, to));
    }
    ranges.sort_by_key(|r| r.0);
    Ok(ranges)
}

/// Reads `rack:a;zone:z1`.
///
/// # Errors
/// An item without `:`, an empty name, a name given twice.
pub fn parse_attributes(text: &str) -> Result<BTreeMap<String, String>, ParseError> {
    const FLAG: &str = "--attributes";
    let mut out = BTreeMap::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) =
            item.split_once(':').ok_or_else(|| error(FLAG, item, "expected name:value (e.g. rack:a)"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(error(FLAG, item, "the name is empty"));
        }
        if out.insert(name.to_owned(), value.trim().to_owned()).is_some() {
            return Err(error(FLAG, item, format!("{name} given twice")));
        }
    }
    Ok(out)
}

/// Resources as given on the command line: what is `None` comes from the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartialResources {
    /// Cores.
    pub cpus: Option<f64>,
    /// MiB of memory.
    pub mem: Option<f64>,
    /// MiB of disk.
    pub disk: Option<f64>,
    /// Port ranges.
    pub ports: Option<Vec<PortRange>>,
}

/// The given resources, with what was not given taken from the host: its cores, its memory, the free space of
/// `work_dir`'s file system, and [`DEFAULT_PORTS`].
///
/// # Errors
/// When the host's memory or the work dir's file system cannot be read (and was needed).
pub fn detect(given: PartialResources, work_dir: &Path) -> std::io::Result<Resources> {
    let cpus = match given.cpus {
        Some(cpus) => cpus,
        None => std::thread::available_parallelism().map(|n| n.get() as f64)?,
    };
    let mem = match given.mem {
        Some(mem) => mem,
        None => host_memory_mib()?,
    };
    let disk = match given.disk {
        Some(disk) => disk,
        None => {
            let existing = work_dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
            let stat = rustix::fs::statvfs(existing)?;
            (stat.f_bavail as f64 * stat.f_frsize as f64 / 1_048_576.0).floor()
        }
    };
    Ok(Resources { cpus, mem, disk, ports: given.ports.unwrap_or_else(|| vec![DEFAULT_PORTS]) })
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn host_memory_mib() -> std::io::Result<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| (kib / 1024.0).floor())
        .ok_or_else(|| std::io::Error::other("/proc/meminfo has no MemTotal"))
}

/// The machine's hostname.
#[must_use]
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_in_mesos_format() {
        let parsed = parse_resources("cpus:4; mem:8192;disk:20000;ports:[31000-32000,33000-33010]").unwrap();
        assert_eq!(parsed.cpus, Some(4.0));
        assert_eq!(parsed.mem, Some(8192.0));
        assert_eq!(parsed.ports, Some(vec![PortRange(31000, 32000), PortRange(33000, 33010)]));
        assert_eq!(parse_resources("ports:[8080]").unwrap().ports, Some(vec![PortRange(8080, 8080)]));
        assert_eq!(parse_resources("").unwrap(), PartialResources::default());
    }

    #[test]
    fn bad_resources_name_the_item() {
        let cases = [
            ("gpus:1", "unknown resource \"gpus\""),
            ("cpus:-1", "non-negative"),
            ("cpus", "expected name:value"),
            ("cpus:1;cpus:2", "cpus given twice"),
            ("ports:31000-32000", "expected ports:[from-to"),
            ("ports:[32000-31000]", "ends before it starts"),
            ("ports:[1-10,5-20]", "overlaps"),
            ("ports:[0-10]", "is not a port"),
        ];
        for (text, want) in cases {
            let e = parse_resources(text).unwrap_err();
            assert!(e.to_string().contains(want) && e.to_string().starts_with("--resources item"), "{text}: {e}");
        }
    }

    #[test]
    fn attributes() {
        let parsed = parse_attributes("rack:a;zone:z1").unwrap();
        assert_eq!(parsed.get("zone").map(String::as_str), Some("z1"));
        assert!(parse_attributes("rack").unwrap_err().to_string().contains("--attributes item \"rack\""));
        assert!(parse_attributes("a:1;a:2").unwrap_err().to_string().contains("given twice"));
    }

    #[test]
    fn what_is_not_given_comes_from_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let given = PartialResources { mem: Some(512.0), ..PartialResources::default() };
        let resources = detect(given, &dir.path().join("not/yet/created")).unwrap();
        assert_eq!(resources.mem, 512.0);
        assert!(resources.cpus >= 1.0);
        assert!(resources.disk > 0.0);
        assert_eq!(resources.ports, [DEFAULT_PORTS]);
        assert!(!hostname().is_empty());
    }
}
