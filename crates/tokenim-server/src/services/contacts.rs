//! Contacts and blocks: a user's address book and who may not message them.

use std::sync::Arc;

use tokenim_core::Result;
use tokenim_proto::ContactList;
use tokenim_store::Store;

use crate::services::Actor;
use crate::services::accounts::Accounts;

pub struct Contacts {
    store: Arc<dyn Store>,
    accounts: Arc<Accounts>,
}

impl Contacts {
    pub fn new(store: Arc<dyn Store>, accounts: Arc<Accounts>) -> Self {
        Contacts { store, accounts }
    }

    pub async fn set_contact(&self, a: &Actor, other: &str, on: bool) -> Result<()> {
        self.accounts.user_info(other).await?;
        Ok(self.store.set_contact(&a.user_id, other, on).await?)
    }

    pub async fn contacts(&self, a: &Actor) -> Result<ContactList> {
        let ids = self.store.contacts(&a.user_id).await?;
        let mut contacts = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(u) = self.accounts.user_info(&id).await {
                contacts.push(u);
            }
        }
        Ok(ContactList { contacts })
    }

    pub async fn set_block(&self, a: &Actor, other: &str, on: bool) -> Result<()> {
        self.accounts.user_info(other).await?;
        Ok(self.store.set_block(&a.user_id, other, on).await?)
    }
}
