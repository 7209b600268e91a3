//! A user's devices: the list with who is online (cluster-wide), removing
//! one (its socket is kicked, its pending acks dropped, its push
//! registration gone with it), and its push registration (I2.1).

use std::sync::Arc;

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Result, validate};
use tokenim_proto::{DeviceInfo, DeviceList, KickReason, PushRegistration, PushToken, WebPushKey};
use tokenim_store::Store;

use crate::delivery::fanout::Fanout;
use crate::push::{PushProviders, register};
use crate::services::Actor;
use crate::services::marks::Marks;

pub struct Devices {
    store: Arc<dyn Store>,
    fanout: Arc<Fanout>,
    marks: Arc<Marks>,
    push: Arc<PushProviders>,
}

impl Devices {
    pub fn new(
        store: Arc<dyn Store>,
        fanout: Arc<Fanout>,
        marks: Arc<Marks>,
        push: Arc<PushProviders>,
    ) -> Self {
        Devices {
            store,
            fanout,
            marks,
            push,
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

    /// `PUT /v1/devices/current/push`: the device's push registration,
    /// replacing any earlier one; its token leaves any other device (I-11).
    pub async fn set_push(&self, a: &Actor, reg: PushRegistration) -> Result<()> {
        let target = register::target(&reg, &self.push)?;
        Ok(self
            .store
            .set_push_token(&a.user_id, &a.device_id, Some(target))
            .await?)
    }

    /// `DELETE /v1/devices/current/push`.
    pub async fn clear_push(&self, a: &Actor) -> Result<()> {
        Ok(self
            .store
            .set_push_token(&a.user_id, &a.device_id, None)
            .await?)
    }

    /// `PUT /v1/push-token`: the alias, for the providers whose
    /// registration is one token (APNs in `production`).
    pub async fn set_push_token(&self, a: &Actor, body: PushToken) -> Result<()> {
        let token = body.token;
        let reg = match body.provider.as_str() {
            "apns" => PushRegistration::Apns {
                token,
                environment: Default::default(),
            },
            "fcm" => PushRegistration::Fcm { token },
            "webhook" => PushRegistration::Webhook { token },
            "webpush" => {
                return Err(Error::bad_request(
                    "webpush registers a subscription with PUT /v1/devices/current/push",
                ));
            }
            _ => {
                return Err(Error::bad_request(
                    "provider must be apns, fcm, webpush or webhook",
                ));
            }
        };
        self.set_push(a, reg).await
    }

    /// `GET /v1/push/webpush-key`: the VAPID public key.
    pub fn webpush_key(&self) -> Result<WebPushKey> {
        match &self.push.webpush {
            Some(wp) => Ok(WebPushKey {
                public_key: wp.public_key.clone(),
            }),
            None => Err(Error::not_found(
                "web push is not configured on this server",
            )),
        }
    }

    /// Notes a socket opening or closing as the device's last sign of life.
    pub async fn touch(&self, a: &Actor) {
        let _ = self
            .store
            .touch_device(&a.user_id, &a.device_id, now_ms(), false)
            .await;
    }
}
