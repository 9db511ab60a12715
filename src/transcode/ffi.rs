//! The only `unsafe` in Strata's FFmpeg code, audited in one place. ffmpeg-next 9 has no safe
//! accessor for a codec context's extradata (a decoder's AVCDecoderConfigurationRecord or
//! AudioSpecificConfig; an encoder's SPS/PPS), nor for `av_frame_make_writable`,
//! `av_frame_ref` and a decoder's `max_pixels`.

use ffmpeg::ffi;
use ffmpeg_next as ffmpeg;

const ENOMEM: i32 = 12;

/// Gives a codec context a copy of `data` as extradata, allocated the way FFmpeg frees it
/// (`av_malloc`, zeroed padding). Replaces any earlier extradata.
pub fn set_extradata(
    context: &mut ffmpeg::codec::Context,
    data: &[u8],
) -> Result<(), ffmpeg::Error> {
    let padded = data.len() + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    let size = i32::try_from(data.len()).map_err(|_| ffmpeg::Error::InvalidData)?;
    // SAFETY: `context` owns a valid AVCodecContext that is not open yet (callers set
    // extradata before opening). The buffer is allocated with av_mallocz (zeroed, so the
    // padding is zero), filled within bounds, and ownership passes to the context, which frees
    // it with av_freep in avcodec_free_context. Any previous buffer was allocated the same way
    // and is freed here before it is replaced.
    unsafe {
        let buffer = ffi::av_mallocz(padded).cast::<u8>();
        if buffer.is_null() {
            return Err(ffmpeg::Error::Other { errno: ENOMEM });
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buffer, data.len());
        let ctx = context.as_mut_ptr();
        if !(*ctx).extradata.is_null() {
            ffi::av_freep(std::ptr::addr_of_mut!((*ctx).extradata).cast());
        }
        (*ctx).extradata = buffer;
        (*ctx).extradata_size = size;
    }
    Ok(())
}

/// Makes a decoder refuse pictures of more than `pixels` (FFmpeg checks it whenever it allocates
/// a picture, so parameter sets inside the stream cannot ask for more than the sequence header
/// was allowed to).
pub fn set_max_pixels(context: &mut ffmpeg::codec::Context, pixels: u64) {
    // SAFETY: `context` owns a valid AVCodecContext that is not open yet; `max_pixels` is a
    // plain int64 field that FFmpeg reads when it allocates picture buffers.
    unsafe {
        (*context.as_mut_ptr()).max_pixels = i64::try_from(pixels).unwrap_or(i64::MAX);
    }
}

/// A copy of a codec context's extradata (empty when it has none).
pub fn extradata(context: &ffmpeg::codec::Context) -> Vec<u8> {
    // SAFETY: FFmpeg keeps `extradata` either null or pointing to `extradata_size` readable
    // bytes for the life of the context; we copy them out while borrowing the context.
    unsafe {
        let ctx = context.as_ptr();
        let size = usize::try_from((*ctx).extradata_size).unwrap_or(0);
        if (*ctx).extradata.is_null() || size == 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts((*ctx).extradata, size).to_vec()
    }
}

/// Makes `frame`'s buffers exclusively ours (copying only if an encoder still holds a
/// reference), so it can be reused as a scaling target without allocating every frame.
pub fn make_writable(frame: &mut ffmpeg::frame::Video) -> Result<(), ffmpeg::Error> {
    // SAFETY: `frame` owns a valid AVFrame; av_frame_make_writable either leaves it as is or
    // replaces its buffers with new ones it allocates, keeping the frame valid.
    match unsafe { ffi::av_frame_make_writable(frame.as_mut_ptr()) } {
        0 => Ok(()),
        e => Err(ffmpeg::Error::from(e)),
    }
}

/// A new frame that shares `frame`'s buffers (reference-counted, no pixel copy) and has its
/// own properties (timestamp, picture type) to set.
pub fn share(frame: &ffmpeg::frame::Video) -> Result<ffmpeg::frame::Video, ffmpeg::Error> {
    let mut shared = ffmpeg::frame::Video::empty();
    // SAFETY: both frames are valid AVFrames; `shared` is freshly allocated and empty, which is
    // what av_frame_ref requires of its destination. On success it holds new references to
    // `frame`'s buffers, released when `shared` is dropped; `frame` is only read.
    match unsafe { ffi::av_frame_ref(shared.as_mut_ptr(), frame.as_ptr()) } {
        0 => Ok(shared),
        e => Err(ffmpeg::Error::from(e)),
    }
}
