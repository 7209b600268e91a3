//! The SQL engines' user writes of the server API (PROTOCOL-INTEGRATION
//! I1.2): create-or-update by ID ([`PutUser::applied_to`] inside a
//! transaction that locks the row, the username's uniqueness from the
//! unique index) and deactivation (the user, their sessions and push
//! registrations in one transaction).

use sqlx::{AnyPool, Row};

use super::{Dialect, USER_SELECT, engine, first_strings, push, user_from_row};
use crate::*;

/// [`Store::put_user`]: two PUTs creating one ID at once make the second
/// insert fail on the key; it is run again as an update.
pub(super) async fn put(d: Dialect, pool: &AnyPool, put: &PutUser) -> StoreResult<(User, bool)> {
    match put_once(d, pool, put).await {
        Err(Retry::Again) => match put_once(d, pool, put).await {
            Err(Retry::Again) => Err(engine("the user changed while it was written")),
            Err(Retry::Fail(e)) => Err(e),
            Ok(v) => Ok(v),
        },
        Err(Retry::Fail(e)) => Err(e),
        Ok(v) => Ok(v),
    }
}

/// [`Store::deactivate_user`].
pub(super) async fn deactivate(
    d: Dialect,
    pool: &AnyPool,
    user_id: &str,
) -> StoreResult<Option<Vec<String>>> {
    let mut tx = pool.begin().await.map_err(engine)?;
    let row = sqlx::query(&d.sql("SELECT deactivated FROM users WHERE user_id = ? FOR UPDATE"))
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(engine)?;
    if row.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query(
        &d.sql("SELECT session_id FROM sessions WHERE user_id = ? ORDER BY session_id"),
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(engine)?;
    let ids = first_strings(&rows)?;
    for sql in [
        "UPDATE users SET deactivated = 1 WHERE user_id = ?",
        "DELETE FROM sessions WHERE user_id = ?",
        push::CLEAR_USER,
    ] {
        sqlx::query(&d.sql(sql))
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(engine)?;
    }
    tx.commit().await.map_err(engine)?;
    Ok(Some(ids))
}

/// One try of [`put`] in a transaction of its own.
async fn put_once(d: Dialect, pool: &AnyPool, put: &PutUser) -> Result<(User, bool), Retry> {
    let mut tx = pool.begin().await.map_err(Retry::fail)?;
    let sql = d.sql(&format!("{USER_SELECT} WHERE user_id = ? FOR UPDATE"));
    let old = sqlx::query(&sql)
        .bind(&put.user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Retry::fail)?
        .map(|r| user_from_row(&r))
        .transpose()
        .map_err(Retry::Fail)?;
    let user = put
        .applied_to(old.as_ref())
        .map_err(|e| Retry::Fail(e.into()))?;
    if old.as_ref() == Some(&user) {
        return Ok((user, false));
    }
    let q = if old.is_some() {
        d.sql(
            "UPDATE users SET username = ?, display_name = ?, password_hash = ?, \
             avatar_url = ?, metadata = ? WHERE user_id = ?",
        )
    } else {
        d.sql(
            "INSERT INTO users (username, display_name, password_hash, avatar_url, \
             metadata, user_id, created_at, deactivated) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        )
    };
    let mut q = sqlx::query(&q)
        .bind(user.username.clone())
        .bind(user.display_name.clone())
        .bind(user.password_hash.clone())
        .bind(user.avatar_url.clone())
        .bind(user.metadata.clone())
        .bind(user.user_id.clone());
    if old.is_none() {
        q = q.bind(user.created_at);
    }
    match q.execute(&mut *tx).await {
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            let name_taken = match &user.username {
                Some(n) => sqlx::query(&d.sql("SELECT user_id FROM users WHERE username = ?"))
                    .bind(n)
                    .fetch_optional(pool)
                    .await
                    .map_err(Retry::fail)?
                    .is_some_and(|r| {
                        r.try_get::<String, _>(0).ok().as_deref() != Some(&user.user_id)
                    }),
                None => false,
            };
            return Err(if name_taken {
                Retry::Fail(Error::conflict("username is taken").into())
            } else {
                Retry::Again
            });
        }
        Err(e) => return Err(Retry::fail(e)),
    }
    tx.commit().await.map_err(Retry::fail)?;
    Ok((user, old.is_none()))
}

/// Why one try of a write failed: a race worth one more try, or an answer.
enum Retry {
    Again,
    Fail(StoreError),
}

impl Retry {
    fn fail(e: impl std::fmt::Display) -> Retry {
        Retry::Fail(engine(e))
    }
}
