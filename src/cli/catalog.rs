//! `nodeup providers`, `nodeup images|sizes|locations --provider P`: what a provider offers.

use clap::Args;

use nodeup::providers;

use super::nodes::ProviderArg;
use super::output::print_json;
use super::Failure;

/// `nodeup images|sizes|locations`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    #[command(flatten)]
    provider: ProviderArg,
    /// Only what this location (region) offers, by id or name (images and sizes).
    #[arg(long)]
    location: Option<String>,
    /// Only images this size can boot.
    #[arg(long)]
    size: Option<String>,
    /// Print the list as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What to list.
#[derive(Debug, Clone, Copy)]
pub enum Catalog {
    /// `nodeup images`: the images nodes can be made from.
    Images,
    /// `nodeup sizes`: the sizes nodes can be made with.
    Sizes,
    /// `nodeup locations`: where nodes can be made.
    Locations,
}

/// Prints the registered providers.
pub fn providers(json: bool) {
    let names = providers::names();
    if json {
        print_json(&names);
    } else {
        for name in names {
            crate::outln!("{name}");
        }
    }
}

/// Lists images, sizes or locations.
pub async fn list(what: Catalog, args: CatalogArgs) -> Result<(), Failure> {
    let driver = providers::get_driver(&args.provider.provider)?;
    let rows: Vec<(String, String)> = match what {
        Catalog::Images => {
            let images = driver
                .list_images(args.location.as_deref(), args.size.as_deref())
                .await?;
            if args.json {
                print_json(&images);
                return Ok(());
            }
            images.into_iter().map(|i| (i.id, i.name)).collect()
        }
        Catalog::Sizes => {
            let sizes = driver.list_sizes(args.location.as_deref()).await?;
            if args.json {
                print_json(&sizes);
                return Ok(());
            }
            sizes
                .into_iter()
                .map(|s| {
                    let cpus = s.vcpus.map(|c| format!("{c} vCPU, ")).unwrap_or_default();
                    let price = s.price.map(|p| format!(", {p}/h")).unwrap_or_default();
                    let region = s
                        .extra
                        .get("region")
                        .and_then(|r| r.as_str())
                        .map(|r| format!(" in {r}"))
                        .unwrap_or_default();
                    (
                        s.id,
                        format!("{}{region} ({cpus}{} MiB{price})", s.name, s.ram_mib),
                    )
                })
                .collect()
        }
        Catalog::Locations => {
            let locations = driver.list_locations().await?;
            if args.json {
                print_json(&locations);
                return Ok(());
            }
            locations.into_iter().map(|l| (l.id, l.name)).collect()
        }
    };
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(2).max(2);
    crate::outln!("{:width$}  NAME", "ID");
    for (id, name) in rows {
        crate::outln!("{id:width$}  {name}");
    }
    Ok(())
}
