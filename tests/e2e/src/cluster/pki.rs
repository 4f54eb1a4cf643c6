//! Certificates and keys for the local control plane, made with the `openssl` command: a CA,
//! the API server's serving certificate for 127.0.0.1, an admin client certificate in
//! `system:masters`, and the service-account signing key pair.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

impl Pki {
    pub fn at(dir: &Path) -> Pki {
        Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        }
    }

    /// Creates every file (a fresh cluster gets a fresh PKI).
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let pki = Pki::at(dir);
        let s = |p: &PathBuf| p.to_string_lossy().into_owned();
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &s(&pki.ca_key)])?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &s(&pki.ca_key),
            "-subj",
            "/CN=infergate-e2e-ca",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &s(&pki.ca_cert),
        ])?;
        pki.leaf(
            dir,
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment",
            &pki.serving_key,
            &pki.serving_cert,
        )?;
        pki.leaf(
            dir,
            "admin",
            "/O=system:masters/CN=infergate-e2e-admin",
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment",
            &pki.admin_key,
            &pki.admin_cert,
        )?;
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &s(&pki.sa_key)])?;
        openssl(&["pkey", "-in", &s(&pki.sa_key), "-pubout", "-out", &s(&pki.sa_pub)])?;
        Ok(pki)
    }

    fn leaf(&self, dir: &Path, name: &str, subject: &str, extensions: &str, key: &Path, cert: &Path) -> Result<()> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let csr = dir.join(format!("{name}.csr"));
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions).map_err(Error::io("writing certificate extensions"))?;
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &s(key)])?;
        openssl(&["req", "-new", "-key", &s(key), "-subj", subject, "-out", &s(&csr)])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&self.ca_cert),
            "-CAkey",
            &s(&self.ca_key),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &s(&ext),
            "-out",
            &s(cert),
        ])
    }
}

fn openssl(args: &[&str]) -> Result<()> {
    let output = Command::new("openssl").args(args).output().map_err(Error::io("running openssl"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("openssl {}", args.join(" ")),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
