//! Checking a proxy tool's arguments: known fields only, and typed accessors that name the
//! field in the -32602 answer.

use simd_json::prelude::*;

use crate::orchestration::{ArgError, Json};
use crate::registry::Catalog;

/// Checks a tool's arguments: known fields only, and typed accessors naming the field.
pub(super) struct Args<'a>(&'a Json);

impl<'a> Args<'a> {
    pub(super) fn new(v: &'a Json, allowed: &[&str]) -> Result<Args<'a>, ArgError> {
        if let Some(obj) = v.as_object() {
            if let Some(bad) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(ArgError::new(
                    bad.as_str(),
                    format!("unknown argument; this tool takes {}", allowed.join(", ")),
                ));
            }
        }
        Ok(Args(v))
    }

    pub(super) fn str_opt(&self, field: &str) -> Result<Option<&'a str>, ArgError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) if !s.trim().is_empty() => Ok(Some(s)),
                _ => Err(ArgError::new(field, "must be a non-empty string")),
            },
        }
    }

    pub(super) fn str_req(&self, field: &str) -> Result<&'a str, ArgError> {
        self.str_opt(field)?
            .ok_or_else(|| ArgError::new(field, "is required: a non-empty string"))
    }

    pub(super) fn obj_opt(&self, field: &str) -> Result<Option<&'a Json>, ArgError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(v) if v.is_object() => Ok(Some(v)),
            Some(_) => Err(ArgError::new(field, "must be an object")),
        }
    }

    pub(super) fn bool_opt(&self, field: &str) -> Result<Option<bool>, ArgError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| ArgError::new(field, "must be true or false")),
        }
    }

    pub(super) fn int_opt(&self, field: &str, lo: u64, hi: u64) -> Result<Option<u64>, ArgError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(ArgError::new(
                    field,
                    format!("must be an integer from {lo} to {hi}"),
                )),
            },
        }
    }

    pub(super) fn strings_opt(
        &self,
        field: &str,
        max: usize,
    ) -> Result<Option<Vec<String>>, ArgError> {
        let Some(v) = self.0.get(field) else {
            return Ok(None);
        };
        let list = v
            .as_array()
            .ok_or_else(|| ArgError::new(field, "must be an array of strings"))?;
        if list.len() > max {
            return Err(ArgError::new(
                field,
                format!("may hold at most {max} items"),
            ));
        }
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ArgError::new(format!("{field}[{i}]"), "must be a non-empty string")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An optional server name, which must be configured.
    pub(super) fn server_opt(
        &self,
        catalog: &Catalog,
        field: &str,
    ) -> Result<Option<usize>, ArgError> {
        match self.str_opt(field)? {
            None => Ok(None),
            Some(name) => catalog.server_index(name).map(Some).ok_or_else(|| {
                let known: Vec<&str> = catalog.servers.iter().map(|s| s.name.as_str()).collect();
                ArgError::new(
                    field,
                    format!(
                        "unknown server \"{name}\"; configured: {}",
                        known.join(", ")
                    ),
                )
            }),
        }
    }
}
