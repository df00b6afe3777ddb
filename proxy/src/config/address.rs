//! Listen addresses as an operator writes them, in the file and on the command line alike:
//! `IP:PORT`, or `HOST:PORT` resolved once at start (`localhost:8080`); a bare port is refused
//! with the address to write instead.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses a listen address for `field` (named in the message, e.g. `listen`).
pub fn parse(text: &str, field: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{field} \"{text}\" is only a port; write an IP address and a port, e.g. \
             \"127.0.0.1:{text}\" (this host only) or \"0.0.0.0:{text}\" (every interface)"
        ));
    }
    let fix = "write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::]:8080\", or a \
               host name and a port such as \"localhost:8080\"";
    if !text.contains(':') {
        return Err(format!("{field} \"{text}\" has no port; {fix}"));
    }
    match text.to_socket_addrs() {
        // IPv4 first: `localhost` usually means 127.0.0.1 to the clients that will connect.
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| format!("{field} \"{text}\" resolves to no address; {fix}"))
        }
        Err(e) => Err(format!("{field} \"{text}\" is not an address ({e}); {fix}")),
    }
}

/// Deserializes a `listen` value with [`parse`].
pub fn deserialize_listen<'de, D>(d: D) -> Result<SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse(&text, "listen").map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_written() {
        assert_eq!(
            parse("127.0.0.1:8080", "listen"),
            Ok("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse("localhost:8080", "listen").map(|a| a.port()),
            Ok(8080)
        );
        let port_only = parse("8083", "listen").expect_err("port only");
        assert!(port_only.contains("\"127.0.0.1:8083\""), "{port_only}");
        let no_port = parse("localhost", "listen").expect_err("no port");
        assert!(no_port.contains("has no port"), "{no_port}");
    }
}
