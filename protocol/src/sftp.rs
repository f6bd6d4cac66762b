//! placeholder: sftp
