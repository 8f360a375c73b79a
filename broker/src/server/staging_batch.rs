//! The batch requests on staging streams (protocol 9): `GetBatch` answers
//! several granted blobs on one stream, `PutBatch` takes several outputs on
//! one, with one lookup of the attempt and one blocking hop a batch.
//!
//! Owns: the stream side of a batch (what is sent and read, in what order,
//! bounded by the sizes announced). The files are `staging::batch`'s; who may
//! fetch is `staging_io`'s grants. It must not touch the store or task state.

use scalable_common::protocol::AttemptId;
use scalable_common::staging::{BlobRef, StageReply, STAGE_BATCH_BYTES_MAX};

use super::staging_io::{grant, lookup, may_fetch, refused, Ctx};
use super::transfer_board::Direction;

/// Sends the blobs `sha256s` whole, back to back, after `Blobs`; `None`: the
/// bytes were the answer.
pub(super) async fn get_batch(
    ctx: &Ctx,
    attempt: AttemptId,
    sha256s: Vec<String>,
    send: &mut quinn::SendStream,
) -> Option<StageReply> {
    for sha in &sha256s {
        if let Err(reply) = may_fetch(ctx, attempt, sha).await {
            return Some(reply);
        }
    }
    let store = ctx.store.clone();
    let read = tokio::task::spawn_blocking(move || store.read_batch(&sha256s)).await;
    let blobs = match read {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Some(refused(format!("cannot send a batch: {e}"))),
        Err(e) => return Some(refused(format!("cannot send a batch: {e}"))),
    };
    let sizes = blobs.iter().map(|b| b.len() as u64).collect();
    let header = StageReply::Blobs { sizes };
    if scalable_common::frame::write_frame(send, &header)
        .await
        .is_err()
    {
        return None;
    }
    let total: u64 = blobs.iter().map(|b| b.len() as u64).sum();
    let mut blobs = blobs;
    if send.write_all_chunks(&mut blobs).await.is_ok() {
        ctx.board.moved(attempt, Direction::In, total);
    }
    None
}

/// Receives the outputs `files` of `attempt` that the broker does not hold
/// yet, whole, back to back; stores them once every one is verified.
pub(super) async fn put_batch(
    ctx: &Ctx,
    attempt: AttemptId,
    files: Vec<BlobRef>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> StageReply {
    if let Err(r) = lookup(ctx, attempt).await {
        return r;
    }
    for f in &files {
        if let Err(why) = ctx.store.count_upload(attempt, &f.sha256, f.size) {
            return refused(why);
        }
    }
    let total = files.iter().map(|f| f.size).fold(0, u64::saturating_add);
    ctx.board.expect(attempt, Direction::Out, total);
    let (store, listed) = (ctx.store.clone(), files.clone());
    let need = match tokio::task::spawn_blocking(move || store.missing(&listed)).await {
        Ok(need) => need,
        Err(e) => return refused(format!("cannot receive a batch: {e}")),
    };
    let needed: Vec<BlobRef> = need.iter().map(|&i| files[i as usize].clone()).collect();
    let reply = StageReply::Need { positions: need };
    if scalable_common::frame::write_frame(send, &reply)
        .await
        .is_err()
    {
        return refused("the agent went away");
    }
    let want = needed.iter().map(|f| f.size).sum::<u64>();
    let data = match read_exactly(recv, want).await {
        Ok(d) => d,
        Err(why) => return refused(why),
    };
    if !needed.is_empty() {
        let store = ctx.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.store_batch(&needed, &data)).await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return refused(why),
            Err(e) => return refused(format!("cannot store a batch: {e}")),
        }
    }
    for f in &files {
        grant(ctx, &f.sha256);
    }
    ctx.board.moved(attempt, Direction::Out, total);
    StageReply::Stored
}

/// The rest of the stream, which must be `want` bytes (at most a batch).
async fn read_exactly(recv: &mut quinn::RecvStream, want: u64) -> Result<Vec<u8>, String> {
    if want > STAGE_BATCH_BYTES_MAX {
        return Err(format!("a batch of {want} bytes is over the limit"));
    }
    let mut data = Vec::with_capacity(want as usize);
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(c)) => {
                if data.len() as u64 + c.bytes.len() as u64 > want {
                    return Err(format!(
                        "the batch sent more than the {want} bytes it needs"
                    ));
                }
                data.extend_from_slice(&c.bytes);
            }
            Ok(None) => break,
            Err(e) => return Err(format!("the batch broke off: {e}")),
        }
    }
    if (data.len() as u64) < want {
        return Err(format!("the batch ended at {} of {want} bytes", data.len()));
    }
    Ok(data)
}
