//! The shortest admin token accepted: the admin API changes the fleet, so a guessable token is
//! refused at start rather than trusted.

/// Fewest characters an admin token may have.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Refuses a token shorter than [`MIN_ADMIN_TOKEN_LEN`]; `source` says where it was set.
pub fn check(token: &str, source: &str) -> Result<(), String> {
    let len = token.chars().count();
    if len < MIN_ADMIN_TOKEN_LEN {
        return Err(format!(
            "{source} is {len} characters, shorter than the {MIN_ADMIN_TOKEN_LEN} required; \
             use a random one such as the output of `openssl rand -hex 32`, or leave it unset \
             to have one generated"
        ));
    }
    Ok(())
}
