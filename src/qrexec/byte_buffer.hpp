// A growable byte buffer for socket reads: space is prepared without being
// zero-filled, consumed bytes are dropped from the front by moving an index,
// and the buffer compacts only when it must.
#pragma once

#include <cstring>
#include <memory>
#include <string_view>

namespace aerie::qrexec {

class ByteBuffer {
public:
    size_t size() const { return end_ - begin_; }
    bool empty() const { return begin_ == end_; }
    const char* data() const { return data_.get() + begin_; }
    std::string_view view() const { return {data(), size()}; }

    // Room for at least n more bytes at the end; write there, then commit().
    char* prepare(size_t n) {
        if (cap_ - end_ < n) {
            size_t used = size();
            if (cap_ - used >= n && begin_ > 0) {
                std::memmove(data_.get(), data(), used);  // compact in place
            } else {
                size_t cap = std::max(cap_ * 2, used + n);
                std::unique_ptr<char[]> bigger(new char[cap]);
                if (used) std::memcpy(bigger.get(), data(), used);
                data_ = std::move(bigger);
                cap_ = cap;
            }
            begin_ = 0;
            end_ = used;
        }
        return data_.get() + end_;
    }
    void commit(size_t n) { end_ += n; }
    void consume(size_t n) {
        begin_ += n;
        if (begin_ == end_) begin_ = end_ = 0;
    }
    void clear() { begin_ = end_ = 0; }

private:
    std::unique_ptr<char[]> data_;
    size_t begin_ = 0, end_ = 0, cap_ = 0;
};

}  // namespace aerie::qrexec
