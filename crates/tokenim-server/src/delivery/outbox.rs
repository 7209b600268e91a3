//! A connection's bounded outbound queue with three priorities: control
//! frames (acks, errors, sync results, kicks) first, then timeline events and
//! notices, then droppable ephemera (typing, presence). A client that does not
//! read is kicked with `slow_consumer` instead of growing memory.

use std::collections::VecDeque;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokenim_proto::KickReason;
use tokio::sync::Notify;

/// Most queued control frames (a client pipelining requests without reading).
pub const MAX_CONTROL: usize = 1024;
/// Most queued events before the connection is a slow consumer.
pub const MAX_EVENTS: usize = 4096;
/// Most queued ephemera; newer ones are dropped beyond it.
pub const MAX_EPHEMERAL: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Control,
    Event,
    Ephemeral,
}

/// Why the connection is ending, as the writer should say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    Kick(KickReason),
    /// A close frame with this code and reason.
    Code(u16, &'static str),
}

#[derive(Default)]
struct Queues {
    control: VecDeque<Utf8Bytes>,
    events: VecDeque<Utf8Bytes>,
    ephemeral: VecDeque<Utf8Bytes>,
    close: Option<Close>,
}

#[derive(Default)]
pub struct Outbox {
    q: Mutex<Queues>,
    notify: Notify,
    /// Woken when the connection starts closing (so a writer blocked on a
    /// full socket can give up).
    closing: Notify,
}

/// What the writer takes out in one go.
pub struct Drained {
    pub frames: Vec<Utf8Bytes>,
    pub close: Option<Close>,
}

impl Outbox {
    /// Queues a frame; `false` when the connection is closing (or was just
    /// kicked for being slow).
    pub fn push(&self, p: Priority, frame: Utf8Bytes) -> bool {
        let mut q = self.q.lock();
        if q.close.is_some() {
            return false;
        }
        match p {
            Priority::Control if q.control.len() >= MAX_CONTROL => {
                Self::kick_locked(&mut q, KickReason::SlowConsumer)
            }
            Priority::Event if q.events.len() >= MAX_EVENTS => {
                Self::kick_locked(&mut q, KickReason::SlowConsumer)
            }
            Priority::Ephemeral if q.ephemeral.len() >= MAX_EPHEMERAL => return true,
            Priority::Control => q.control.push_back(frame),
            Priority::Event => q.events.push_back(frame),
            Priority::Ephemeral => q.ephemeral.push_back(frame),
        }
        let alive = q.close.is_none();
        drop(q);
        self.notify.notify_one();
        if !alive {
            self.closing.notify_waiters();
        }
        alive
    }

    fn kick_locked(q: &mut Queues, reason: KickReason) {
        q.control.clear();
        q.events.clear();
        q.ephemeral.clear();
        q.close = Some(Close::Kick(reason));
    }

    /// Ends the connection; what is queued is dropped for a kick and kept
    /// (sent first) for a plain close. The first close wins.
    pub fn close(&self, c: Close) {
        let mut q = self.q.lock();
        if q.close.is_none() {
            if let Close::Kick(r) = c {
                Self::kick_locked(&mut q, r);
            } else {
                q.close = Some(c);
            }
        }
        drop(q);
        self.notify.notify_one();
        self.closing.notify_waiters();
    }

    /// Resolves once the connection is closing.
    pub async fn wait_closing(&self) {
        let n = self.closing.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        if self.is_closing() {
            return;
        }
        n.await;
    }

    pub fn is_closing(&self) -> bool {
        self.q.lock().close.is_some()
    }

    /// Waits until something is queued, then takes all of it in priority order.
    pub async fn drain(&self) -> Drained {
        loop {
            {
                let mut q = self.q.lock();
                let n = q.control.len() + q.events.len() + q.ephemeral.len();
                if n > 0 || q.close.is_some() {
                    let mut frames = Vec::with_capacity(n);
                    frames.extend(q.control.drain(..));
                    frames.extend(q.events.drain(..));
                    frames.extend(q.ephemeral.drain(..));
                    // The queues are empty now: give back what a burst grew
                    // (an idle socket keeps almost nothing).
                    if q.close.is_some() || q.events.capacity() > 64 {
                        q.events.shrink_to_fit();
                    }
                    if q.close.is_some() || q.control.capacity() > 64 {
                        q.control.shrink_to_fit();
                    }
                    if q.close.is_some() {
                        q.ephemeral.shrink_to_fit();
                    }
                    return Drained {
                        frames,
                        close: q.close,
                    };
                }
            }
            self.notify.notified().await;
        }
    }
}

/// A frame as the text every recipient's outbox shares (serialized once).
pub fn shared(f: &tokenim_proto::ServerFrame) -> Utf8Bytes {
    f.to_json().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn priorities_and_slow_consumer() {
        let o = Outbox::default();
        assert!(o.push(Priority::Ephemeral, "t".into()));
        assert!(o.push(Priority::Event, "e".into()));
        assert!(o.push(Priority::Control, "c".into()));
        let d = o.drain().await;
        let got: Vec<&str> = d.frames.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["c", "e", "t"]);
        for _ in 0..MAX_EVENTS {
            assert!(o.push(Priority::Event, "e".into()));
        }
        assert!(!o.push(Priority::Event, "e".into()));
        let d = o.drain().await;
        assert!(d.frames.is_empty());
        assert_eq!(d.close, Some(Close::Kick(KickReason::SlowConsumer)));
    }
}
