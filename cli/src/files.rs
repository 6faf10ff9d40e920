//! Manifest files on disk: reading them (a file, a directory, or `-` for stdin) and `agora validate`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::args::Output;

/// Validates every manifest; returns whether all were valid.
pub(crate) fn validate(inputs: &[PathBuf], output: Option<Output>) -> Result<bool> {
    let mut all_valid = true;
    for file in expand(inputs)? {
        let (origin, source) = read(&file)?;
        match agora_schemas::manifest::parse_and_validate(&source, &origin) {
            Ok(documents) => {
                for document in documents {
                    match output {
                        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&document.object.to_json())?),
                        None => println!(
                            "{origin}: {} {} is valid",
                            document.object.info().kind,
                            document.object.metadata().display_name()
                        ),
                    }
                }
            }
            Err(errors) => {
                all_valid = false;
                for error in errors {
                    eprintln!("{error}");
                }
            }
        }
    }
    Ok(all_valid)
}

pub(crate) fn read(file: &Path) -> Result<(String, String)> {
    if file.as_os_str() == "-" {
        let source = std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
        return Ok(("-".to_owned(), source));
    }
    let source = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok((file.display().to_string(), source))
}

/// Files as given, and the manifests below each directory, in name order.
pub(crate) fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            collect(input, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

pub(crate) fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
