//! Pinning an API server's certificate authority by the SHA-256 of its
//! public key (`sha256:<hex>`, the form kubeadm's
//! `--discovery-token-ca-cert-hash` uses), so a newcomer trusts its hub
//! without the anonymous `cluster-info` ConfigMap that locked-down servers
//! do not serve: it reads the chain the server presents, keeps the
//! certificate whose key matches the pin, and sends nothing before that.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// `sha256:<hex>` of a DER certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(format!("sha256:{}", hex(digest.as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The PEM of a DER certificate.
pub fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Records the chain a server presents and accepts it: trust is decided
/// afterwards, by the pin, before any request is made.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Vec<u8>>>);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificates `server` (an `https://host:port` URL) presents, leaf
/// first. Only a TLS handshake is made: nothing is sent over it.
pub fn presented_chain(server: &str, timeout: Duration) -> Result<Vec<Vec<u8>>, String> {
    let uri: http::Uri = server
        .parse()
        .map_err(|e| format!("{server:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{server:?} is not an https:// URL"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{server:?} names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port} cannot be resolved: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolves to no address"))?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{host}:{port} cannot be reached: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).ok();
    tcp.set_write_timeout(Some(timeout)).ok();
    let recorder = Arc::new(Recorder::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(recorder.clone())
    .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    let _ = tcp.flush();
    let chain = std::mem::take(&mut *recorder.0.lock().unwrap_or_else(|e| e.into_inner()));
    if chain.is_empty() {
        return Err(format!("{host}:{port} presented no certificate"));
    }
    Ok(chain)
}

/// The certificate of `chain` whose key `pin` names, or an error that
/// lists what the server presents (hashes of public keys are not secret).
pub fn pinned(chain: &[Vec<u8>], pin: &str) -> Result<Vec<u8>, String> {
    let want = pin.trim().to_ascii_lowercase();
    if !want.starts_with("sha256:") || want.len() != 7 + 64 {
        return Err(format!(
            "--ca-sha256 {pin:?} is not sha256:<64 hex digits> (the form `canopy token create` prints)"
        ));
    }
    let mut seen = Vec::new();
    for der in chain {
        let h = spki_sha256(der)?;
        if h == want {
            return Ok(der.clone());
        }
        seen.push(h);
    }
    Err(format!(
        "the server's certificates do not match --ca-sha256 (it presents {}); nothing was sent to it: check the URL and the hash `canopy token create` printed",
        seen.join(", ")
    ))
}

/// The root-most certificate a server presents: the CA a newcomer is told
/// to pin when the admin's kubeconfig names none itself.
pub fn presented_ca(chain: &[Vec<u8>]) -> Option<&Vec<u8>> {
    chain.last()
}
