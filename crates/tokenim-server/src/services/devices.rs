//! A user's devices: the list with who is online (cluster-wide), removing
//! one (its socket is kicked, its pending acks dropped), and its push
//! registration.

use std::sync::Arc;

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Result, validate};
use tokenim_proto::{DeviceInfo, DeviceList, KickReason, PushToken};
use tokenim_store::Store;

use crate::delivery::fanout::Fanout;
use crate::services::Actor;
use crate::services::marks::Marks;

pub struct Devices {
    store: Arc<dyn Store>,
    fanout: Arc<Fanout>,
    marks: Arc<Marks>,
}

impl Devices {
    pub fn new(store: Arc<dyn Store>, fanout: Arc<Fanout>, marks: Arc<Marks>) -> Self {
        Devices {
            store,
            fanout,
            marks,
        }
    }

    pub async fn list(&self, a: &Actor) -> Result<DeviceList> {
        let devs = self.store.devices(&a.user_id).await?;
        let live = self.fanout.online_devices(&a.user_id).await;
        let now = now_ms();
        Ok(DeviceList {
            devices: devs
                .into_iter()
                .map(|d| {
                    let online = live.contains(&d.device_id);
                    DeviceInfo {
                        last_seen: if online { now } else { d.last_seen },
                        online,
                        device_id: d.device_id,
                        platform: d.platform,
                    }
                })
                .collect(),
        })
    }

    pub async fn remove(&self, a: &Actor, device_id: &str) -> Result<()> {
        validate::device_id(device_id)?;
        if self
            .store
            .remove_device(&a.user_id, device_id)
            .await?
            .is_none()
        {
            return Err(Error::not_found("no such device"));
        }
        self.marks.forget_device(&a.user_id, device_id);
        self.fanout
            .kick(&a.user_id, device_id, KickReason::Revoked)
            .await;
        Ok(())
    }

    /// `PUT /v1/push-token`: the device's push registration.
    pub async fn set_push_token(&self, a: &Actor, body: PushToken) -> Result<()> {
        if !["webhook", "apns", "fcm"].contains(&body.provider.as_str()) {
            return Err(Error::bad_request("provider must be webhook, apns or fcm"));
        }
        if body.token.is_empty() || body.token.len() > 4096 {
            return Err(Error::bad_request("token must be 1-4096 bytes"));
        }
        let target = tokenim_store::PushTarget::new(&body.provider, &body.token);
        Ok(self
            .store
            .set_push_token(&a.user_id, &a.device_id, Some(target))
            .await?)
    }

    /// Notes a socket opening or closing as the device's last sign of life.
    pub async fn touch(&self, a: &Actor) {
        let _ = self
            .store
            .touch_device(&a.user_id, &a.device_id, now_ms(), false)
            .await;
    }
}
