//! Images by id or by name: the newest image whose name matches, among the owners the step file
//! names or the well-known publishers of Debian, Ubuntu and Amazon Linux; and the login user each
//! publisher's images have.

use super::xml;

/// A publisher of images whose login user is known.
#[derive(Debug, Clone, Copy)]
pub struct Publisher {
    /// The AWS account that publishes them.
    pub owner: &'static str,
    /// What its image names start with.
    pub prefixes: &'static [&'static str],
    /// Its images' login user.
    pub user: &'static str,
}

/// The publishers of Debian, Ubuntu and Amazon Linux images, and their login users.
pub const PUBLISHERS: [Publisher; 3] = [
    // Debian's cloud team (debian-12-amd64-20240717-1811 ...).
    Publisher {
        owner: "136693071363",
        prefixes: &["debian-"],
        user: "admin",
    },
    // Canonical (ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-... ).
    Publisher {
        owner: "099720109477",
        prefixes: &["ubuntu/", "ubuntu-"],
        user: "ubuntu",
    },
    // Amazon (al2023-ami-..., amzn2-ami-...).
    Publisher {
        owner: "137112412989",
        prefixes: &["al2023-", "amzn2-", "amzn-"],
        user: "ec2-user",
    },
];

/// The login user of an image: by its publisher, else by what its name says.
pub fn login_user(image: &xml::Image) -> Option<&'static str> {
    let name = image.name.to_ascii_lowercase();
    PUBLISHERS
        .iter()
        .find(|p| p.owner == image.image_owner_id)
        .or_else(|| {
            PUBLISHERS
                .iter()
                .find(|p| p.prefixes.iter().any(|pre| name.starts_with(pre)))
        })
        .map(|p| p.user)
}

/// Whether `image` is an AMI id rather than a name.
pub fn is_id(image: &str) -> bool {
    image.starts_with("ami-")
        && image.len() > 4
        && image[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The name filter for `name`: as given when it holds a wildcard, else the name and any later
/// release of it (`debian-12-amd64` matches `debian-12-amd64-20240717-1811`).
pub fn name_pattern(name: &str) -> String {
    if name.contains(['*', '?']) {
        name.to_string()
    } else {
        format!("{name}*")
    }
}

/// The newest available image of `images` (by creation date, then name): the one a name means.
pub fn newest(mut images: Vec<xml::Image>) -> Option<xml::Image> {
    images.retain(|i| i.image_state.is_empty() || i.image_state == "available");
    images.into_iter().max_by(|a, b| {
        (a.creation_date.as_deref(), a.name.as_str())
            .cmp(&(b.creation_date.as_deref(), b.name.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, owner: &str, date: &str) -> xml::Image {
        xml::Image {
            image_id: format!("ami-{:08x}", name.len()),
            name: name.into(),
            image_owner_id: owner.into(),
            creation_date: Some(date.into()),
            image_state: "available".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_matching_image_and_its_user() {
        let older = image(
            "debian-12-amd64-20240201-1644",
            "136693071363",
            "2024-02-01T17:00:00.000Z",
        );
        let newer = image(
            "debian-12-amd64-20240717-1811",
            "136693071363",
            "2024-07-17T18:40:00.000Z",
        );
        let chosen = newest(vec![older, newer.clone()]).unwrap();
        assert_eq!(chosen.name, newer.name);
        assert_eq!(login_user(&chosen), Some("admin"));
        let copied = image(
            "ubuntu/images/hvm-ssd/ubuntu-noble",
            "123456789012",
            "2024-01-01",
        );
        assert_eq!(login_user(&copied), Some("ubuntu"), "by name when copied");
        assert_eq!(
            login_user(&image("al2023-ami-2023.5", "137112412989", "x")),
            Some("ec2-user")
        );
        assert_eq!(
            login_user(&image("my-golden-image", "123456789012", "x")),
            None
        );
        assert!(is_id("ami-0abcdef1234567890"));
        assert!(!is_id("debian-12-amd64"));
        assert_eq!(name_pattern("debian-12-amd64"), "debian-12-amd64*");
        assert_eq!(name_pattern("debian-12-*-2024*"), "debian-12-*-2024*");
    }
}
