//! The media worker: one thread per started element that drives webrtcbin in the order the
//! state machine asked. Nothing that can block on GStreamer (a webrtcbin going to NULL, a
//! sending chain waiting to be unlinked between two buffers, a peer connection rebuilt for an
//! ICE restart) runs on the plugin runtime's only thread, where the signaling of every call
//! of the process runs: a hang-up's `bye` leaves at once, whatever webrtcbin is doing.
//!
//! Between actions the worker watches the media path ([`WilddogCall::check_path`]).

use std::sync::mpsc;
use std::time::Duration;

use gst::subclass::prelude::*;
use wilddog_call::MediaAction;

use super::{CAT, WilddogCall, lock};

/// How often the worker looks at the media path when no action comes.
const PATH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long stopping waits for the worker to finish what it does.
const WORKER_STOP_WAIT: Duration = Duration::from_secs(5);

/// The running worker of a started element.
#[derive(Debug)]
pub(super) struct MediaWorker {
    actions: mpsc::Sender<MediaAction>,
    /// Disconnected when the thread ends.
    done: mpsc::Receiver<()>,
    thread: std::thread::ThreadId,
}

impl WilddogCall {
    /// Starts the worker (READY→PAUSED).
    pub(super) fn start_media_worker(&self) -> Result<(), String> {
        let (actions, queue) = mpsc::channel::<MediaAction>();
        let (done_tx, done) = mpsc::channel::<()>();
        let weak = self.obj().downgrade();
        let thread = std::thread::Builder::new()
            .name("wilddog-media".into())
            .spawn(move || {
                let _done = done_tx;
                loop {
                    let next = queue.recv_timeout(PATH_CHECK_INTERVAL);
                    let Some(obj) = weak.upgrade() else { return };
                    match next {
                        Ok(action) => obj.imp().on_media(action),
                        Err(mpsc::RecvTimeoutError::Timeout) => obj.imp().check_path(),
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start the media thread: {e}"))?;
        let worker = MediaWorker { actions, done, thread: thread.thread().id() };
        lock(&self.state).media_worker = Some(worker);
        Ok(())
    }

    /// Hands a media action to the worker; dropped when the element is not started.
    pub(super) fn queue_media(&self, action: MediaAction) {
        let st = lock(&self.state);
        match &st.media_worker {
            Some(worker) => {
                let _ = worker.actions.send(action);
            }
            None => gst::debug!(CAT, imp = self, "media action after stopping: dropped"),
        }
    }

    /// Ends the worker after what it was given (PAUSED→READY); waits for it unless called
    /// on the worker itself (a handler of one of our messages stopping the pipeline).
    pub(super) fn stop_media_worker(&self) {
        let Some(worker) = lock(&self.state).media_worker.take() else { return };
        let MediaWorker { actions, done, thread } = worker;
        drop(actions);
        if std::thread::current().id() == thread {
            return;
        }
        if let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(WORKER_STOP_WAIT) {
            gst::warning!(CAT, imp = self, "the media thread is still busy; stopping anyway");
        }
    }
}
