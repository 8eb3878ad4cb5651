//! What the fake OVH API offers, as OVH has it: real region names, flavors and images per region
//! with UUID ids (the same name in two regions is two ids), and, in GRA11, two images that share a
//! name (OVH lists such pairs: a name alone does not always pick one image).

use serde_json::{json, Value};

/// The regions of the fake's project.
pub const REGIONS: [&str; 6] = ["GRA11", "SBG5", "BHS5", "DE1", "UK1", "WAW1"];

/// Flavors: name, vCPUs, RAM (MB), disk (GB), bandwidth (Mbit/s), hourly price (EUR).
const FLAVORS: [(&str, u32, u64, u64, u64, f64); 3] = [
    ("b2-7", 2, 7000, 50, 250, 0.0681),
    ("b2-15", 4, 15000, 100, 250, 0.1395),
    ("d2-2", 1, 2000, 25, 100, 0.0099),
];

/// Images every region has: name, login user.
const IMAGES: [(&str, &str); 1] = [("Debian 12", "debian")];

/// The image name GRA11 has twice.
pub const TWIN_IMAGE: &str = "Ubuntu 24.04";

/// A UUID made from a kind, a name and a region: stable across runs, different per region.
fn uuid(kind: u8, name: &str, region: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in [kind]
        .iter()
        .chain(name.as_bytes())
        .chain(b"/")
        .chain(region.as_bytes())
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let hex = format!("{h:016x}{:016x}", h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The id of the flavor `name` in `region`.
pub fn flavor_id(name: &str, region: &str) -> String {
    uuid(b'f', name, region)
}

/// The id of the public image `name` in `region` (for the twin, the first of the two).
pub fn image_id(name: &str, region: &str) -> String {
    uuid(b'i', name, region)
}

/// Every flavor of every region, as `GET /flavor` answers.
pub fn flavors() -> Vec<Value> {
    let mut all = Vec::new();
    for region in REGIONS {
        for (name, vcpus, ram, disk, bandwidth, _) in FLAVORS {
            all.push(json!({
                "id": flavor_id(name, region), "name": name, "region": region, "vcpus": vcpus,
                "ram": ram, "disk": disk, "type": "ovh.ssd.eg", "osType": "linux",
                "available": true, "inboundBandwidth": bandwidth, "outboundBandwidth": bandwidth,
                "planCodes": {"hourly": format!("{name}.consumption"), "monthly": format!("{name}.monthly")},
            }));
        }
    }
    all
}

/// Hourly prices, as `GET /cloud/project/{p}/flavor` does not give them: `GET .../price`'s shape
/// of the fixtures (`{"instances": [{"flavorId", "region", "price": {"value"}}]}`).
pub fn prices() -> Value {
    let mut instances = Vec::new();
    for region in REGIONS {
        for (name, _, _, _, _, price) in FLAVORS {
            instances.push(json!({
                "flavorId": flavor_id(name, region), "flavorName": name, "region": region,
                "price": {"currencyCode": "EUR", "value": price, "text": format!("{price} €")},
            }));
        }
    }
    json!({"instances": instances, "snapshots": [], "volumes": []})
}

/// Every public image of every region, with the GRA11 twin.
pub fn images() -> Vec<Value> {
    let image = |id: String, name: &str, region: &str, user: &str| {
        json!({"id": id, "name": name, "region": region, "type": "linux", "visibility": "public",
               "status": "active", "user": user, "minDisk": 0, "minRam": 0, "size": 2.1,
               "creationDate": "2024-06-10T10:00:00Z", "flavorType": null})
    };
    let mut all = Vec::new();
    for region in REGIONS {
        for (name, user) in IMAGES {
            all.push(image(image_id(name, region), name, region, user));
        }
    }
    all.push(image(
        image_id(TWIN_IMAGE, "GRA11"),
        TWIN_IMAGE,
        "GRA11",
        "ubuntu",
    ));
    all.push(image(
        uuid(b'j', TWIN_IMAGE, "GRA11"),
        TWIN_IMAGE,
        "GRA11",
        "ubuntu",
    ));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids_and_differ_by_region() {
        let a = flavor_id("b2-7", "GRA11");
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, flavor_id("b2-7", "SBG5"));
        assert_eq!(a, flavor_id("b2-7", "GRA11"), "stable");
        assert_ne!(image_id("Debian 12", "GRA11"), a);
    }
}
