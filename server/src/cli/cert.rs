//! `flotilla cert ...`: makes the certificates of a secure cluster (see `tls::create`).
//!
//! ```sh
//! flotilla cert create-ca --certs-dir certs --ca-key safe/ca.key
//! flotilla cert create-node --certs-dir certs --ca-key safe/ca.key --node-id 1 localhost 127.0.0.1
//! flotilla cert create-client --certs-dir certs --ca-key safe/ca.key root
//! flotilla cert create-token --certs-dir certs ci-bot
//! ```

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::tls::create::{self, Paths, Validity};

/// Where certificates go and which CA key signs them.
#[derive(Args, Debug, Clone)]
pub struct CertDirs {
    /// The directory to write to; `create-node` and `create-client` read its ca.crt.
    #[arg(long, value_name = "DIR")]
    pub certs_dir: PathBuf,
    /// The CA's private key (default DIR/ca.key). Keep it off the nodes if you can.
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// Replace files that exist (to rotate: then send the nodes SIGHUP).
    #[arg(long)]
    pub overwrite: bool,
}

impl CertDirs {
    fn paths(&self) -> Paths {
        Paths {
            certs_dir: self.certs_dir.clone(),
            ca_key: self
                .ca_key
                .clone()
                .unwrap_or_else(|| self.certs_dir.join(crate::tls::files::CA_KEY)),
            overwrite: self.overwrite,
        }
    }
}

/// `flotilla cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Make the cluster's CA: DIR/ca.crt, and its key at --ca-key.
    CreateCa {
        #[command(flatten)]
        dirs: CertDirs,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Make DIR/node.crt and DIR/node.key for one node, naming every HOST (name or
    /// address) other nodes and clients dial it by.
    CreateNode {
        #[command(flatten)]
        dirs: CertDirs,
        /// The node's id: the certificate lets it speak as this node only.
        #[arg(long)]
        node_id: u64,
        /// Host names and IP addresses of the node.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 1825)]
        days: u32,
    },
    /// Make DIR/client.NAME.crt and DIR/client.NAME.key (clients pick it with --user).
    CreateClient {
        #[command(flatten)]
        dirs: CertDirs,
        /// The client's name (logged on admin operations).
        name: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 1825)]
        days: u32,
    },
    /// Make a bearer token for NAME, for clients behind a proxy that terminates TLS: its
    /// SHA-256 is added to DIR/tokens (copy it to every node's certs dir and send SIGHUP);
    /// the token is printed once.
    CreateToken {
        /// The directory whose `tokens` file gets the hash.
        #[arg(long, value_name = "DIR")]
        certs_dir: PathBuf,
        /// The token's name (logged on admin operations).
        name: String,
    },
}

/// Runs a `flotilla cert` command; returns the exit code.
pub fn run(cmd: CertCmd) -> i32 {
    let result = match cmd {
        CertCmd::CreateCa { dirs, days } => create::create_ca(&dirs.paths(), Validity::days(days)),
        CertCmd::CreateNode {
            dirs,
            node_id,
            hosts,
            days,
        } => {
            if node_id == 0 || node_id > flotilla_raftstore::MAX_NODE_ID {
                eprintln!(
                    "error: --node-id {node_id} is out of range: node ids are 1..={}",
                    flotilla_raftstore::MAX_NODE_ID
                );
                return super::EXIT_ERROR;
            }
            create::create_node(&dirs.paths(), node_id, &hosts, Validity::days(days))
        }
        CertCmd::CreateClient { dirs, name, days } => {
            create::create_client(&dirs.paths(), &name, Validity::days(days))
        }
        CertCmd::CreateToken { certs_dir, name } => match create::create_token(&certs_dir, &name) {
            Ok(token) => {
                println!("{token}");
                return super::EXIT_OK;
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            super::EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            super::EXIT_ERROR
        }
    }
}
