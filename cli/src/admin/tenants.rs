//! `magnetar admin tenants ...` (pulsar-admin tenants).

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::{print, segment, AdminClient};

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        tenant: String,
        /// Roles that administer the tenant (comma-separated).
        #[arg(short = 'r', long = "admin-roles", value_delimiter = ',')]
        admin_roles: Vec<String>,
        /// Clusters the tenant may use (comma-separated).
        #[arg(short = 'c', long = "allowed-clusters", value_delimiter = ',')]
        allowed_clusters: Vec<String>,
    },
    /// List tenants.
    List,
    /// Show a tenant's configuration.
    Get { tenant: String },
    /// Delete a tenant that has no namespaces.
    Delete { tenant: String },
}

pub async fn run(client: &AdminClient, command: TenantsCommand) -> Result<()> {
    match command {
        TenantsCommand::Create {
            tenant,
            admin_roles,
            allowed_clusters,
        } => {
            let info = json!({"adminRoles": admin_roles, "allowedClusters": allowed_clusters});
            client
                .put(&format!("tenants/{}", segment(&tenant)), Some(&info))
                .await?;
        }
        TenantsCommand::List => print(client.get("tenants").await?)?,
        TenantsCommand::Get { tenant } => {
            print(client.get(&format!("tenants/{}", segment(&tenant))).await?)?
        }
        TenantsCommand::Delete { tenant } => {
            client
                .delete(&format!("tenants/{}", segment(&tenant)))
                .await?;
        }
    }
    Ok(())
}
