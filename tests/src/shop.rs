//! A deterministic single-table-design export: the migration guide's shop (users, their orders,
//! products, their reviews) in one DynamoDB table told apart by key prefixes, plus sessions with a
//! TTL (some already expired at the export time) and a few items that must be rejected.
//!
//! The generator keeps the entities it wrote ([`Shop`]), so tests compute every expected value
//! (rows per table, the validation queries' numbers) from them, independently of Ferry.

use std::path::Path;

use serde_json::{json, Value};

use crate::gen::{add_data_file, generate_export, GenOptions, GeneratedExport, Rng};

/// The export time the generator writes (`exportTime` of the manifest), epoch seconds.
pub const EXPORT_TIME: i64 = 1_700_000_000;

/// A user (`PK=USER#<id>`, `SK=PROFILE`).
#[derive(Clone, Debug)]
pub struct User {
    /// Numeric id.
    pub id: i32,
    /// Display name (unique).
    pub name: String,
    /// The email as stored in DynamoDB (mixed case, padded): the target holds it trimmed and
    /// lowercased.
    pub raw_email: String,
    /// active or suspended.
    pub status: String,
    /// City in `profile.address.city`.
    pub city: String,
    /// Loyalty tier in `profile.tier`.
    pub tier: String,
    /// `created_at`, ISO-8601 text.
    pub created_at: String,
    /// The same, epoch seconds.
    pub created_epoch: i64,
}

/// An order (`PK=USER#<user>`, `SK=ORDER#<id>`).
#[derive(Clone, Debug)]
pub struct Order {
    /// Numeric id.
    pub id: i32,
    /// The user.
    pub user_id: i32,
    /// Total in cents.
    pub total_cents: i64,
    /// One of the guide's statuses.
    pub status: String,
    /// (product id, quantity, unit price in cents).
    pub items: Vec<(i32, i64, i64)>,
    /// Shipping city.
    pub ship_city: String,
    /// `created_at`, epoch seconds.
    pub created_epoch: i64,
    /// A `coupon` attribute no column takes (it lands in the rest column).
    pub coupon: Option<String>,
}

/// A product (`PK=PRODUCT#<id>`, `SK=METADATA`).
#[derive(Clone, Debug)]
pub struct Product {
    /// Numeric id.
    pub id: i32,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Category.
    pub category: String,
    /// `attributes.color`.
    pub color: String,
}

/// A review (`PK=PRODUCT#<product>`, `SK=REVIEW#<id>`).
#[derive(Clone, Debug)]
pub struct Review {
    /// Numeric id.
    pub id: i32,
    /// The product.
    pub product_id: i32,
    /// The reviewer (`user_pk = USER#<id>`).
    pub user_id: i32,
    /// 1 to 5.
    pub rating: i16,
    /// Title.
    pub title: String,
    /// `text`, the `body` column.
    pub text: String,
}

/// A session (`PK=USER#<user>`, `SK=SESSION#<id>`) with a TTL in epoch seconds.
#[derive(Clone, Debug)]
pub struct Session {
    /// Numeric id.
    pub id: i32,
    /// The user.
    pub user_id: i32,
    /// `ttl`, epoch seconds; before [`EXPORT_TIME`] means DynamoDB had not yet deleted it.
    pub ttl: i64,
}

/// Everything the generator wrote.
#[derive(Clone, Debug, Default)]
pub struct Shop {
    /// Users.
    pub users: Vec<User>,
    /// Orders.
    pub orders: Vec<Order>,
    /// Products.
    pub products: Vec<Product>,
    /// Reviews.
    pub reviews: Vec<Review>,
    /// Sessions.
    pub sessions: Vec<Session>,
    /// Lines that must be rejected, with the reason's key words.
    pub bad_lines: Vec<(String, &'static str)>,
}

const STATUSES: &[&str] = &["pending", "processing", "shipped", "delivered", "cancelled"];
const CITIES: &[&str] = &["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Pune"];
const CATEGORIES: &[&str] = &["tools", "garden", "kitchen", "toys"];

fn cents(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for an epoch (civil-from-days, no time library needed).
fn iso(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Generates a shop of `users` users (with orders, sessions), `products` products (with
/// reviews), deterministically from `seed`.
pub fn generate_shop(seed: u64, users: usize, products: usize) -> Shop {
    let mut rng = Rng::new(seed);
    let mut shop = Shop::default();
    for i in 0..users {
        let id = 1000 + i as i32;
        let created_epoch = 1_600_000_000 + rng.below(90_000_000) as i64;
        shop.users.push(User {
            id,
            name: format!(
                "User {id} {}",
                rng.pick_str(&["Smith", "Okafor", "Tanaka", "Silva"])
            ),
            raw_email: format!("  User{id}@Example.COM "),
            status: rng.pick_str(&["active", "active", "suspended"]).to_string(),
            city: rng.pick_str(CITIES).to_string(),
            tier: rng.pick_str(&["gold", "silver", "bronze"]).to_string(),
            created_at: iso(created_epoch),
            created_epoch,
        });
    }
    for i in 0..products {
        shop.products.push(Product {
            id: 500 + i as i32,
            name: format!("Widget {i}"),
            description: format!("A widget, model {i}"),
            price_cents: 99 + rng.below(20_000) as i64,
            category: rng.pick_str(CATEGORIES).to_string(),
            color: rng.pick_str(&["red", "blue", "green"]).to_string(),
        });
    }
    let mut order_id = 1;
    let mut session_id = 1;
    for user in shop.users.clone() {
        for _ in 0..rng.below(6) {
            let mut items = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let product = &shop.products[rng.below(shop.products.len() as u64) as usize];
                items.push((product.id, 1 + rng.below(4) as i64, product.price_cents));
            }
            let total_cents = items.iter().map(|(_, q, p)| q * p).sum();
            shop.orders.push(Order {
                id: order_id,
                user_id: user.id,
                total_cents,
                status: rng.pick_str(STATUSES).to_string(),
                items,
                ship_city: rng.pick_str(CITIES).to_string(),
                created_epoch: 1_650_000_000 + rng.below(40_000_000) as i64,
                coupon: rng.chance(30).then(|| format!("SAVE{}", rng.below(50))),
            });
            order_id += 1;
        }
        for _ in 0..rng.below(3) {
            // Half expired before the export (DynamoDB deletes expired items lazily).
            let ttl = EXPORT_TIME - 500_000 + rng.below(1_000_000) as i64;
            shop.sessions.push(Session {
                id: session_id,
                user_id: user.id,
                ttl,
            });
            session_id += 1;
        }
    }
    let mut review_id = 1;
    for product in shop.products.clone() {
        for _ in 0..rng.below(4) {
            let user = &shop.users[rng.below(shop.users.len() as u64) as usize];
            shop.reviews.push(Review {
                id: review_id,
                product_id: product.id,
                user_id: user.id,
                rating: 1 + rng.below(5) as i16,
                title: format!("Review {review_id}"),
                text: format!("Product {} is fine, says {}", product.id, user.name),
            });
            review_id += 1;
        }
    }
    shop.bad_lines = vec![
        (
            // A total NUMERIC(12,2) would round.
            item(json!({
                "PK": {"S": "USER#1000"}, "SK": {"S": "ORDER#999999"},
                "total": {"N": "12.345"}, "status": {"S": "pending"},
                "items": {"L": []}, "created_at": {"N": "1650000000"}
            })),
            "more than 2 digits after the point",
        ),
        (
            item(json!({"PK": {"S": "JUNK#1"}, "SK": {"S": "WHATEVER"}})),
            "no routing rule matches",
        ),
        (
            // The orders table's CHECK would refuse the status: a reject, not a failed chunk.
            item(json!({
                "PK": {"S": "USER#1000"}, "SK": {"S": "ORDER#999998"},
                "total": {"N": "10.00"}, "status": {"S": "lost"},
                "items": {"L": []}, "created_at": {"N": "1650000000"}
            })),
            "is not one of the allowed values",
        ),
        (
            item(json!({
                "PK": {"S": "PRODUCT#500"}, "SK": {"S": "REVIEW#999999"},
                "user_pk": {"S": "USER#1000"}, "rating": {"N": "6"}
            })),
            "6 is outside 1..=5",
        ),
    ];
    shop
}

fn item(attributes: Value) -> String {
    json!({ "Item": attributes }).to_string()
}

impl Shop {
    /// Every item as an export line, with the bad lines, in a deterministic shuffled order.
    pub fn lines(&self, seed: u64) -> Vec<String> {
        let mut lines = Vec::new();
        for u in &self.users {
            lines.push(item(json!({
                "PK": {"S": format!("USER#{}", u.id)},
                "SK": {"S": "PROFILE"},
                "name": {"S": u.name},
                "email": {"S": u.raw_email},
                "status": {"S": u.status},
                "profile": {"M": {
                    "address": {"M": {"city": {"S": u.city}}},
                    "tier": {"S": u.tier}
                }},
                "created_at": {"S": u.created_at},
                "GSI1PK": {"S": format!("EMAIL#{}", u.raw_email.trim().to_lowercase())}
            })));
        }
        for o in &self.orders {
            let items: Vec<Value> = o
                .items
                .iter()
                .map(|(p, q, c)| {
                    json!({"M": {
                        "product_id": {"N": p.to_string()},
                        "quantity": {"N": q.to_string()},
                        "price": {"N": cents(*c)}
                    }})
                })
                .collect();
            let mut attributes = json!({
                "PK": {"S": format!("USER#{}", o.user_id)},
                "SK": {"S": format!("ORDER#{:06}", o.id)},
                "total": {"N": cents(o.total_cents)},
                "status": {"S": o.status},
                "items": {"L": items},
                "shipping_address": {"M": {"city": {"S": o.ship_city}}},
                "created_at": {"N": o.created_epoch.to_string()}
            });
            if let Some(coupon) = &o.coupon {
                attributes["coupon"] = json!({"S": coupon});
            }
            lines.push(item(attributes));
        }
        for p in &self.products {
            lines.push(item(json!({
                "PK": {"S": format!("PRODUCT#{}", p.id)},
                "SK": {"S": "METADATA"},
                "name": {"S": p.name},
                "description": {"S": p.description},
                "price": {"N": cents(p.price_cents)},
                "category": {"S": p.category},
                "color": {"S": p.color}
            })));
        }
        for r in &self.reviews {
            lines.push(item(json!({
                "PK": {"S": format!("PRODUCT#{}", r.product_id)},
                "SK": {"S": format!("REVIEW#{}", r.id)},
                "user_pk": {"S": format!("USER#{}", r.user_id)},
                "rating": {"N": r.rating.to_string()},
                "title": {"S": r.title},
                "text": {"S": r.text}
            })));
        }
        for s in &self.sessions {
            lines.push(item(json!({
                "PK": {"S": format!("USER#{}", s.user_id)},
                "SK": {"S": format!("SESSION#{}", s.id)},
                "ttl": {"N": s.ttl.to_string()},
                "device": {"S": "phone"}
            })));
        }
        lines.extend(self.bad_lines.iter().map(|(l, _)| l.clone()));
        let mut rng = Rng::new(seed ^ 0x5348_4f50);
        for i in (1..lines.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            lines.swap(i, j);
        }
        lines
    }

    /// Sessions whose TTL had not passed at the export time (the others are filtered).
    pub fn live_sessions(&self) -> Vec<&Session> {
        self.sessions
            .iter()
            .filter(|s| s.ttl >= EXPORT_TIME)
            .collect()
    }
}

/// Writes the shop as an export of `files` data files under `root` (table `ShopTable`).
pub fn write_shop_export(
    root: &Path,
    shop: &Shop,
    seed: u64,
    files: usize,
) -> std::io::Result<GeneratedExport> {
    let mut export = generate_export(
        root,
        &GenOptions {
            seed,
            items: 0,
            files: 0,
            table_name: "ShopTable".into(),
            edge_cases: false,
            ..GenOptions::default()
        },
    )?;
    let lines = shop.lines(seed);
    let per_file = lines.len().div_ceil(files.max(1));
    for chunk in lines.chunks(per_file.max(1)) {
        add_data_file(&mut export, chunk)?;
    }
    Ok(export)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_match_known_epochs() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(EXPORT_TIME), "2023-11-14T22:13:20Z");
        assert_eq!(iso(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_shop_is_deterministic_and_complete() {
        let a = generate_shop(7, 40, 10);
        let b = generate_shop(7, 40, 10);
        assert_eq!(a.lines(7), b.lines(7));
        assert!(!a.orders.is_empty() && !a.reviews.is_empty() && !a.sessions.is_empty());
        assert!(
            a.live_sessions().len() < a.sessions.len(),
            "some sessions expired"
        );
        let total = a.users.len()
            + a.orders.len()
            + a.products.len()
            + a.reviews.len()
            + a.sessions.len()
            + a.bad_lines.len();
        assert_eq!(a.lines(7).len(), total);
    }
}
