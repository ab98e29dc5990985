// Programs that hand the codec a type it cannot carry. Each FLOCK_CASE_* must fail to compile
// with flock's own message (see CMakeLists.txt); FLOCK_CASE_control must compile, so that the
// failures cannot come from a broken build.
#include <flock/codec.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

[[maybe_unused]] std::vector<std::byte> someBytes() { return std::vector<std::byte>(16); }

struct Owner {
  std::unique_ptr<int> p;
  int x = 0;
};

struct Worker {
  std::thread t;
};

class NoDefault {
public:
  explicit NoDefault(int v) : v_(v) {}
  template <class Ar>
  void serialize(Ar& ar) {
    ar(v_);
  }

private:
  int v_;
};

struct HookWithPointer {
  int id = 0;
  double* weights = nullptr;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(id, weights);
  }
};

struct Base {
  int a = 0;
};
struct Derived : Base {
  std::string s;
};

struct IntOnlyCodec {
  static void encode(flockmp::ByteWriter& w, int v) { w.writeRaw(v); }
  template <class T>
  requires std::same_as<T, int>
  static T decode(flockmp::ByteReader& r) { return r.readRaw<int>(); }
};

struct Point {
  int x = 0;
  std::string label;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(x, label);
  }
};

struct Plain {
  std::vector<int> v;
  std::string s;
};

} // namespace

int main() {
#if defined(FLOCK_CASE_raw_pointer)
  int value = 1;
  int* p = &value;
  return static_cast<int>(flockmp::encode(p).size());
#elif defined(FLOCK_CASE_string_view)
  return static_cast<int>(flockmp::decode<std::string_view>(someBytes()).size());
#elif defined(FLOCK_CASE_unique_ptr_member)
  return static_cast<int>(flockmp::encode(Owner{}).size());
#elif defined(FLOCK_CASE_thread_member)
  return static_cast<int>(flockmp::encode(Worker{}).size());
#elif defined(FLOCK_CASE_vector_of_pointers)
  return static_cast<int>(flockmp::encode(std::vector<const char*>{"a"}).size());
#elif defined(FLOCK_CASE_hook_without_default_constructor)
  return static_cast<int>(flockmp::encode(NoDefault{1}).size());
#elif defined(FLOCK_CASE_hook_with_pointer_field)
  return static_cast<int>(flockmp::encode(HookWithPointer{}).size());
#elif defined(FLOCK_CASE_aggregate_with_base)
  return static_cast<int>(flockmp::encode(Derived{}).size());
#elif defined(FLOCK_CASE_custom_codec)
  flockmp::requireCodable<IntOnlyCodec, std::string>();
  return 0;
#elif defined(FLOCK_CASE_control)
  // The same path with types the codec carries: this one must compile.
  static_assert(!flockmp::Serializable<int*>);
  flockmp::requireCodable<IntOnlyCodec, int>();
  const auto a = flockmp::encode(Point{1, "p"});
  const auto b = flockmp::encode(std::vector<Plain>{{{1, 2}, "s"}});
  const auto c = flockmp::encode(std::string_view("view").size());
  return static_cast<int>(flockmp::decode<Point>(a).x +
                          flockmp::decode<std::vector<Plain>>(b).size() +
                          flockmp::decode<std::size_t>(c));
#else
#error "no FLOCK_CASE_* defined"
#endif
}
