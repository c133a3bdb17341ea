//! The conversation and message items (COMPAT §6.1–§6.3, K9, D4).

use crate::chat::ctx::Ctx;
use crate::chat::repo::{ConversationRow, MessageRow, ShopBrief, UserBrief};
use crate::laravel::dates::{conversation_date, message_date};
use crate::laravel::json::ObjectWriter;
use crate::shop::assets::placeholder;

/// `shop_id`, `shop_name`, `shop_logo` of a receiver (§6.1, §5.5 step 6, D4).
pub struct ShopFace {
    pub id: i64,
    /// `null` for a shop without a name.
    pub name: Option<String>,
    pub logo: String,
}

/// The face a receiver shows: the in-house shop for an admin, the first shop
/// of a seller, else the receiver's own name (D4: never a 500).
pub async fn shop_face(
    ctx: &Ctx<'_>,
    receiver: &UserBrief,
    shop: Option<&ShopBrief>,
) -> Result<ShopFace, sqlx::Error> {
    let root = ctx.root();
    if receiver.user_type == "admin" {
        return Ok(ShopFace {
            id: 0,
            name: Some("In House Product".to_owned()),
            logo: ctx.state.assets.header_logo(root).await?,
        });
    }
    Ok(match shop {
        Some(shop) => ShopFace {
            id: shop.id,
            name: shop.name.clone(),
            logo: ctx.state.assets.asset(root, shop.logo.as_deref()).await?,
        },
        None => ShopFace {
            id: 0,
            name: Some(receiver.name.clone()),
            logo: placeholder(root),
        },
    })
}

/// The items of a conversation page (receivers and shops came with the rows), each as its
/// compact JSON (§3.1) for [`crate::laravel::paginate::envelope`].
pub async fn conversation_items(
    ctx: &Ctx<'_>,
    rows: &[ConversationRow],
) -> Result<Vec<String>, sqlx::Error> {
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let (receiver_type, face) = match &row.receiver {
            Some(user) => (
                user.user_type.as_str(),
                shop_face(ctx, user, row.shop.as_ref()).await?,
            ),
            None => (
                "deleted",
                ShopFace {
                    id: 0,
                    name: Some("Deleted user".to_owned()),
                    logo: placeholder(ctx.root()),
                },
            ),
        };
        let date = conversation_date(
            row.updated_at.as_deref(),
            ctx.state.settings.laravel.timezone,
        );
        let mut item = String::with_capacity(384);
        ObjectWriter::new(&mut item)
            .int("id", row.id)
            .int("receiver_id", row.receiver_id.0)
            .str("receiver_type", receiver_type)
            .int("shop_id", face.id)
            .opt_str("shop_name", face.name.as_deref())
            .str("shop_logo", &face.logo)
            .opt_str("title", row.title.as_deref())
            .int("sender_viewed", row.sender_viewed)
            .int("receiver_viewed", row.receiver_viewed)
            .opt_str("date", date.as_deref())
            .end();
        items.push(item);
    }
    Ok(items)
}

/// A message item (§6.2) as its compact JSON (§3.1): the stored wall time formatted without
/// conversion.
pub fn message_item(row: &MessageRow) -> String {
    let d = message_date(row.created_at.as_deref().unwrap_or("0000-00-00 00:00:00"));
    let mut item = String::with_capacity(256);
    ObjectWriter::new(&mut item)
        .int("id", row.id)
        .int("user_id", row.user_id.0)
        .str("send_type", row.user_type.as_deref().unwrap_or("deleted"))
        .opt_str("message", row.message.as_deref())
        .str("year", &d.year)
        .str("month", &d.month)
        .str("day_of_month", &d.day_of_month)
        .str("date", &d.date)
        .str("time", &d.time)
        .end();
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use serde_json::Value;

    #[test]
    fn message_item_bytes() {
        let row = MessageRow {
            id: 38,
            user_id: UserId(5),
            message: Some("Thanks <b>admin</b> & team \"quoted\"".into()),
            created_at: Some("2024-05-10 14:30:00".into()),
            user_type: Some("customer".into()),
        };
        assert_eq!(
            message_item(&row),
            r#"{"id":38,"user_id":5,"send_type":"customer","message":"Thanks <b>admin<\/b> & team \"quoted\"","year":"2024","month":"05","day_of_month":"10-May","date":"May 10, 2024","time":"02:30 pm"}"#
        );
    }

    #[test]
    fn deleted_author() {
        let row = MessageRow {
            id: 1,
            user_id: UserId(99),
            message: None,
            created_at: None,
            user_type: None,
        };
        let item: Value = serde_json::from_str(&message_item(&row)).unwrap();
        assert_eq!(item["send_type"], "deleted");
        assert_eq!(item["message"], Value::Null);
    }
}
