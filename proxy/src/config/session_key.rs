//! `[proxy] session_key` (or `MCP_PROXY_SESSION_KEY`): the key that seals session ids
//! (`mcp::session::token`), written as hex so it fits a TOML string or an environment variable.

/// Bytes of key material.
pub const KEY_LEN: usize = 32;

/// Why a configured key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hex digits.
    #[error("session_key must be {} hex digits (32 random bytes, e.g. from `openssl rand -hex 32`)", KEY_LEN * 2)]
    Malformed,
}

/// The key bytes written as 64 hex digits (surrounding blanks ignored).
pub fn key_bytes(hex: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let hex = hex.trim();
    // `from_str_radix` alone would also take a sign (`+f`): one key, one spelling.
    if hex.len() != KEY_LEN * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Malformed);
    }
    let mut bytes = [0u8; KEY_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2).ok_or(KeyError::Malformed)?, 16)
            .map_err(|_| KeyError::Malformed)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_hex_digits_make_a_key_anything_else_is_refused() {
        assert_eq!(key_bytes(&"0f".repeat(32)).expect("key"), [0x0f; KEY_LEN]);
        assert!(key_bytes(&format!("  {}  ", "AB".repeat(32))).is_ok());
        let signed = format!("+f{}", "ab".repeat(31));
        for bad in ["abc", &"zz".repeat(32), &"ab".repeat(33), &signed] {
            let e = key_bytes(bad).expect_err(bad);
            assert!(e.to_string().contains("64 hex digits"), "{e}");
        }
    }
}
