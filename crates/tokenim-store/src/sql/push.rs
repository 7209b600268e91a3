//! Push registrations in the SQL engines (PROTOCOL-INTEGRATION I2.1,
//! I-11): a registration and the removal of its token from every other
//! device in one transaction, through the unique `devices_push_key` index.

use sqlx::AnyPool;

use super::{Dialect, engine, writer::retryable};
use crate::*;

/// Drops every push registration of the user `?` (deactivation).
pub(crate) const CLEAR_USER: &str = "UPDATE devices SET push_provider = NULL, push_token = NULL, \
     push_environment = NULL, push_p256dh = NULL, push_auth = NULL, push_key = NULL \
     WHERE user_id = ? AND push_provider IS NOT NULL";

/// Rounds before a registration that keeps losing races gives up: each
/// round some contender commits, so this bounds the contenders for one
/// token, far above the two a real phone handover makes.
const ROUNDS: u32 = 24;

/// Sets or drops a device's registration. With a token, first takes it from
/// whichever other device holds it (found by `push_key`). Devices
/// registering one token at once: the unique index makes all but one
/// transaction fail; each loser waits a moment (jittered) and runs again,
/// now seeing the winner and taking the token from it, so the last
/// registration to commit holds it.
pub(crate) async fn set(
    d: Dialect,
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    target: Option<PushTarget>,
) -> StoreResult<()> {
    let mut round = 0;
    loop {
        round += 1;
        match attempt(d, pool, user_id, device_id, target.as_ref()).await {
            Err(Attempt::Sql(e)) if round < ROUNDS && retryable(&e) => {
                let ms = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=2 + round as u64);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Err(Attempt::Sql(e)) => return Err(engine(e)),
            Err(Attempt::NoDevice) => return Err(Error::not_found("no such device").into()),
            Ok(()) => return Ok(()),
        }
    }
}

enum Attempt {
    NoDevice,
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        Attempt::Sql(e)
    }
}

async fn attempt(
    d: Dialect,
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    target: Option<&PushTarget>,
) -> Result<(), Attempt> {
    let mut tx = pool.begin().await?;
    let found = sqlx::query(
        &d.sql("SELECT device_id FROM devices WHERE user_id = ? AND device_id = ? FOR UPDATE"),
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        return Err(Attempt::NoDevice);
    }
    let key = target.map(PushTarget::token_key);
    if let Some(key) = &key {
        sqlx::query(&d.sql(
            "UPDATE devices SET push_provider = NULL, push_token = NULL, \
             push_environment = NULL, push_p256dh = NULL, push_auth = NULL, push_key = NULL \
             WHERE push_key = ? AND NOT (user_id = ? AND device_id = ?)",
        ))
        .bind(key.clone())
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&d.sql(
        "UPDATE devices SET push_provider = ?, push_token = ?, push_environment = ?, \
         push_p256dh = ?, push_auth = ?, push_key = ? WHERE user_id = ? AND device_id = ?",
    ))
    .bind(target.map(|t| t.provider.clone()))
    .bind(target.map(|t| t.token.clone()))
    .bind(target.and_then(|t| t.environment.clone()))
    .bind(target.and_then(|t| t.p256dh.clone()))
    .bind(target.and_then(|t| t.auth.clone()))
    .bind(key)
    .bind(user_id)
    .bind(device_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
