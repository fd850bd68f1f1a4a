// Captures the microphone as 16 kHz mono PCM16 for `audio.append` binary frames.
// Each output sample is the mean of the input samples it covers (a box filter before decimation),
// with the fractional rate ratio carried over, so any device rate works. Posts 100 ms chunks.
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.targetRate = (options.processorOptions && options.processorOptions.targetRate) || 16000;
    this.ratio = sampleRate / this.targetRate;
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
    this.chunk = new Int16Array(this.targetRate / 10);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.sum += channel[i];
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.ratio) {
        const value = Math.max(-1, Math.min(1, this.sum / this.count));
        this.chunk[this.filled++] = value < 0 ? value * 32768 : value * 32767;
        this.sum = 0;
        this.count = 0;
        this.phase -= this.ratio;
        if (this.filled === this.chunk.length) {
          this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
          this.chunk = new Int16Array(this.targetRate / 10);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
