//! The conversation and message items (COMPAT §6.1–§6.3, K9, D4).

use serde_json::{json, Value};

use crate::chat::ctx::Ctx;
use crate::chat::repo::{ConversationRow, MessageRow, ShopBrief, UserBrief};
use crate::laravel::dates::{conversation_date, message_date};
use crate::shop::assets::placeholder;

/// `shop_id`, `shop_name`, `shop_logo` of a receiver (§6.1, §5.5 step 6, D4).
pub struct ShopFace {
    pub id: i64,
    pub name: Value,
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
            name: json!("In House Product"),
            logo: ctx.state.assets.header_logo(root).await?,
        });
    }
    Ok(match shop {
        Some(shop) => ShopFace {
            id: shop.id,
            name: json!(shop.name),
            logo: ctx.state.assets.asset(root, shop.logo.as_deref()).await?,
        },
        None => ShopFace {
            id: 0,
            name: json!(receiver.name),
            logo: placeholder(root),
        },
    })
}

/// The items of a conversation page (receivers and shops came with the rows).
pub async fn conversation_items(
    ctx: &Ctx<'_>,
    rows: &[ConversationRow],
) -> Result<Vec<Value>, sqlx::Error> {
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let (receiver_type, face) = match &row.receiver {
            Some(user) => (
                json!(user.user_type),
                shop_face(ctx, user, row.shop.as_ref()).await?,
            ),
            None => (
                json!("deleted"),
                ShopFace {
                    id: 0,
                    name: json!("Deleted user"),
                    logo: placeholder(ctx.root()),
                },
            ),
        };
        items.push(json!({
            "id": row.id,
            "receiver_id": row.receiver_id,
            "receiver_type": receiver_type,
            "shop_id": face.id,
            "shop_name": face.name,
            "shop_logo": face.logo,
            "title": row.title,
            "sender_viewed": row.sender_viewed,
            "receiver_viewed": row.receiver_viewed,
            "date": conversation_date(row.updated_at.as_deref(), ctx.state.settings.laravel.timezone),
        }));
    }
    Ok(items)
}

/// A message item (§6.2): the stored wall time formatted without conversion.
pub fn message_item(row: &MessageRow) -> Value {
    let d = message_date(row.created_at.as_deref().unwrap_or("0000-00-00 00:00:00"));
    json!({
        "id": row.id,
        "user_id": row.user_id,
        "send_type": row.user_type.as_deref().unwrap_or("deleted"),
        "message": row.message,
        "year": d.year,
        "month": d.month,
        "day_of_month": d.day_of_month,
        "date": d.date,
        "time": d.time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::laravel::json::to_php_json;

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
            to_php_json(&message_item(&row)),
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
        let item = message_item(&row);
        assert_eq!(item["send_type"], "deleted");
        assert_eq!(item["message"], Value::Null);
    }
}
